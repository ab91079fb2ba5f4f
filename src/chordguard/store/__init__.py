"""chordguard's own persistence (journal, dead letters, leases, barriers).

``connections`` resolves a store URL to a shared SQLAlchemy engine or Redis client.
"""
