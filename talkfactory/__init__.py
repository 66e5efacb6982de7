"""talkfactory: livestream speech in, lip-synced avatar videos out, in batches, with lineage."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
