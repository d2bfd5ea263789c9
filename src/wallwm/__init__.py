"""wallwm: the data engine and built-in trainer for event-grounded World Action Models.

Subpackages, in data-flow order:

- :mod:`wallwm.pipeline` -- sources, decoding, segmentation, the Ray Data chain, Lance tables.
- :mod:`wallwm.captioner` -- event captioning with VLMs.
- :mod:`wallwm.clustering` -- embeddings, clustering, balanced weights, curation.
- :mod:`wallwm.trainer` -- training from the curated tables, checkpoints, serving.
- :mod:`wallwm.cli` -- the ``wallwm`` command line.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wallwm")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
