"""Embeddings, hierarchical k-means, dedup, cluster-balanced weights and curation."""
