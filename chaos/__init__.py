"""The chaos harness: real clusters driven through faults, one table of outcomes.

``python -m chaos`` runs the matrix (rows: ``faults.FAULTS``, columns: ``kinds.KINDS``) and
prints one table; ``--rows``/``--cols`` pick a part of it. Each cell starts a fresh cluster
(its own namespace, real ``celery worker`` subprocesses) against private servers
(``tests.private_servers``: a broker ``redis-server``, a store ``redis-server``, a PostgreSQL
cluster) so SIGSTOP, restarts and wipes never touch the machine's shared services.
"""
