"""Training from the curated Lance tables, checkpoints, evaluation and the policy server."""
