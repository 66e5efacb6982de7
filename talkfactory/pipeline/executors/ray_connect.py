"""Join the Ray cluster the executors live on, once per process.

Where: ``TALKFACTORY_RAY_ADDRESS`` (``host:port``; ``factory up`` exports its own instance's). Unset,
a Ray instance already running on this machine is joined (``address="auto"``), else one is started
inside this process for library use: its actors are detached but end with the process, so models stay
resident only while it runs. The factory never relies on that: it always exports an address.

Ray 2.60 turns on token authentication for clusters it starts, and a process that joins one by an
explicit address sends its token only when ``RAY_AUTH_MODE=token``. So when that is unset and a token
is at hand (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), token mode is turned
on for this process, as Ray itself does for ``address="auto"``. The token is never read or logged here.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import ray
from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
from ray.exceptions import AuthenticationError

from talkfactory.errors import ConfigurationError, ExecutorUnavailableError

NAMESPACE = "talkfactory"
"""Every talkfactory actor's namespace: names are unique within it, and any driver finds them."""

log = logging.getLogger(__name__)
_lock = threading.Lock()


def connect(address: str | None) -> None:
    """Join (or start, see the module notes) the Ray cluster; a no-op when this process already has."""
    with _lock:
        if ray.is_initialized():
            return
        common: dict[str, object] = {
            "namespace": NAMESPACE,
            # Actor output stays in the cluster's log files; streamed here it would interleave with
            # the flow's own logs, line by line from every actor.
            "log_to_driver": False,
            "logging_level": logging.WARNING,
            "include_dashboard": False,
        }
        try:
            if address and address != "auto":
                _token_mode_if_token_at_hand()
                ray.init(address=address, **common)  # type: ignore[arg-type]
                log.info("joined the Ray cluster at %s", address)
                return
            try:
                ray.init(address="auto", **common)  # type: ignore[arg-type]
                log.info("joined the Ray instance running on this machine")
            except ConnectionError:
                if address == "auto":
                    raise
                ray.init(**common)  # type: ignore[arg-type]
                log.info("started a Ray instance inside this process (no TALKFACTORY_RAY_ADDRESS)")
        except (ConnectionError, AuthenticationError) as exc:
            if not _refused_token(exc):
                raise ExecutorUnavailableError(
                    f"cannot join the Ray cluster: {exc}", subject=address
                ) from exc
            raise ConfigurationError(
                "the Ray cluster refused this process's token: set RAY_AUTH_TOKEN_PATH to the cluster's "
                "token file (see docs/factory.md)",
                subject=address or "auto",
            ) from None


def _token_mode_if_token_at_hand() -> None:
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH")
        default = Path.home() / ".ray" / "auth_token"
        if os.environ.get("RAY_AUTH_TOKEN") or (path and Path(path).is_file()) or default.is_file():
            os.environ["RAY_AUTH_MODE"] = mode = "token"
    if mode == "token":
        # Ray reads its config once, at import, which may have been before the variable was set;
        # re-reading it is what Ray's own switch to token mode does. The token is cached too, and a
        # process that left one cluster for another must send the new cluster's.
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def _refused_token(exc: BaseException) -> bool:
    """Ray reports a wrong or missing token as a ConnectionError around an AuthenticationError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AuthenticationError) or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
