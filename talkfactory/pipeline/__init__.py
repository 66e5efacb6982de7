"""Steps that join models to infra (decode -> backend -> encode), runnable without Prefect.

Tasks wrap these with retries, caching and lineage; tests call them directly.
"""
