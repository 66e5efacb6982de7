"""The ``talkfactory`` command line (``main``); one module per group of commands."""

from talkfactory.cli.main import main

__all__ = ["main"]
