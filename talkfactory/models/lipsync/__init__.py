"""Lip-sync backends behind one interface (see base.py)."""
