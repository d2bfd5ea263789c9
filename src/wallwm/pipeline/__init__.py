"""Sources, decoding, event segmentation, the Ray Data chain, Lance schemas and writers."""
