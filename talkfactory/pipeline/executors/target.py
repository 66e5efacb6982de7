"""Resolve an executor target, ``"package.module:function"``, to the function it names."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from talkfactory.errors import ConfigurationError

JobFn = Callable[[Any, dict[str, Any]], Any]
"""``fn(job, cache) -> result``; ``cache`` lives as long as the executor that calls it."""


def load_target(target: str) -> JobFn:
    """The function ``target`` names; ``ConfigurationError`` naming the target when it cannot be used."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError("an executor target is 'package.module:function'", subject=target)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name}: {exc}", subject=target) from exc
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)  # type: ignore[assignment]
        if fn is None:
            raise ConfigurationError(f"{module_name} has no {attr}", subject=target)
    if not callable(fn):
        raise ConfigurationError(f"{attr} is not callable", subject=target)
    return fn
