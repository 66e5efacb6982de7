"""Lineage tables, engine and repository (SQLAlchemy 2; SQLite default, Postgres in production)."""
