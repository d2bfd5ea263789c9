"""The table layer every stage reads and writes through.

- :mod:`.schemas`: the Arrow schema of every Lance table under a dataset root;
- :mod:`.store`: the :class:`~.store.TableStore` protocol, Lance and in-memory stores
  (``merge_insert`` upserts, atomic batch commits);
- :mod:`.ids`: content-derived keys and hashes, what makes every stage idempotent;
- :mod:`.lineage`: which run wrote what, with which config, and the failures table;
- :mod:`.status`: what a dataset holds and how far each stage has come;
- :mod:`.arrays`: Arrow <-> numpy for per-frame vector columns and rows on the wire.
"""
