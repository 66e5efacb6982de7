"""Prefect tasks: thin wrappers binding one pipeline step to retries, caching and lineage."""
