"""PostgreSQL adapters, for deployments where many workers share one state database.

Each module implements one part's port; ``psycopg`` (the ``pg`` extra) is imported only
when a store connects.
"""
