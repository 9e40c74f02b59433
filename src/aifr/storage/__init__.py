"""Adapters implementing the ports declared by each part (SQLite default, PostgreSQL)."""
