"""Exports of curated snapshots to the formats other training stacks read."""
