"""Executors: what runs render jobs. ``local`` (this process) and ``ray`` (resident actors)."""
