"""The store on SQLAlchemy 2: a SQLite file (embedded, the default) or PostgreSQL.

``schema`` holds every table (one MetaData), ``engine`` the connections and the one
fork-safety rule, ``store`` the store itself (``barriers`` its durable-chord half).
"""
