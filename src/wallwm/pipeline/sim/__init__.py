"""Simulators that record episodes in the folder format (built-in synthetic; MetaWorld)."""
