"""``chordguard demo``: an embedded cluster (filesystem broker, SQLite backend, a real worker)
with one healthy chord and one stuck one. ``run`` drives it; ``app`` is the worker's app."""
