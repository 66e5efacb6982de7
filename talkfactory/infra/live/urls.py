"""Push URLs: where a live stream goes, with its stream key kept secret.

An RTMP ingest URL is ``rtmp[s]://host[:port]/app/<stream key>``. The key is a password: whoever has
it can broadcast on the channel. So the URL is resolved once into a ``PushTarget`` whose ``url`` (the
only place the key lives) is left out of ``repr``, and everything that may be shown, logged, raised or
stored uses ``masked`` (``rtmp://host:1935/app/****``) or passes text through ``redact`` first.

A URL can be written out, or read from somewhere the key is kept::

    rtmp://a.rtmp.youtube.com/live2/abcd-efgh        the key inline (a terminal, never a deployment)
    env:YT_LIVE_URL                                  the whole URL from an environment variable
    file:/run/secrets/yt-live-url                    the whole URL from a file (its first line)
    rtmp://a.rtmp.youtube.com/live2/env:YT_KEY       the server inline, the key from a variable
    rtmp://a.rtmp.youtube.com/live2/file:/run/k      the server inline, the key from a file
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from talkfactory.errors import ConfigurationError

PUSH_SCHEMES = ("rtmp", "rtmps")
"""What a push may go to: never a file, a pipe or any other protocol ffmpeg knows."""
MASK = "****"
DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
_MAX_SECRET_FILE_BYTES = 64 * 1024
_REF = re.compile(r"^(env|file):(.+)$", re.DOTALL)
# Any rtmp-family URL in free text (ffmpeg's messages, a traceback): scheme://host/app, then the rest.
_ANY_PUSH_URL = re.compile(
    r"(rtmp[st]?s?://[^/\s'\"]+/[^/\s'\"?]*)([/?][^\s'\"]*[^\s'\":,;.)\]])?", re.IGNORECASE
)


@dataclass(frozen=True)
class PushTarget:
    """A resolved push URL. Only ``url`` holds the stream key, and it is never in ``repr``."""

    url: str = field(repr=False)
    masked: str
    """``rtmp://host:port/app/****``: what errors, logs and lineage show."""
    scheme: str
    host: str
    port: int
    app: str
    secrets: tuple[str, ...] = field(repr=False, default=())
    """The key and the whole URL in the spellings they may appear in (``redact`` removes them)."""

    def redact(self, text: str) -> str:
        return redact(text, self)

    def __str__(self) -> str:  # an f-string of a target must never print the key
        return self.masked


def mask_url(url: str) -> str:
    """``rtmp://host:port/app/****``: scheme, host, port and application kept, everything after hidden.

    Credentials in the authority (``user:pass@``) and the query string are dropped too. Text that is
    not a URL at all becomes ``****`` (it may be a bare key given by mistake).
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    scheme = parts.scheme.lower()
    netloc = _netloc(host, port or DEFAULT_PORTS.get(scheme))
    app = parts.path.lstrip("/").split("/", 1)[0]
    return f"{scheme}://{netloc}/{app}/{MASK}" if app else f"{scheme}://{netloc}/{MASK}"


def redact(text: str, target: PushTarget | None = None) -> str:
    """``text`` with the target's key (in every spelling) and any push URL's key and query masked.

    Also URLs that are not the target's (ffmpeg prints the inner ``tcp://`` URL without the key, and
    the RTMP URL with it): every ``rtmp[s]://host/app/...`` keeps only host and app.
    """
    if target is not None:
        for secret in sorted(target.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, target.masked if "://" in secret else MASK)
    return _ANY_PUSH_URL.sub(lambda m: m.group(1) + (f"/{MASK}" if m.group(2) else ""), text)


def is_reference(spec: str) -> bool:
    """True when ``spec`` names where the key is kept (``env:``/``file:``) instead of holding it."""
    spec = spec.strip()
    if _REF.match(spec):
        return True
    try:
        parts = urlsplit(spec)
    except ValueError:
        return False
    segments = parts.path.lstrip("/").split("/", 1)
    return len(segments) == 2 and bool(_REF.match(unquote(segments[1]))) and not parts.query


def resolve_target(spec: str, *, env: Mapping[str, str] | None = None) -> PushTarget:
    """The ``PushTarget`` ``spec`` means (see the module docstring for the forms).

    ``ConfigurationError`` (naming the variable or file, never the key) when a reference cannot be
    read, the scheme is not rtmp/rtmps, or the URL has no host, application or stream key.
    """
    environ = os.environ if env is None else env
    spec = spec.strip()
    ref = _REF.match(spec)
    url = _read_reference(ref.group(1), ref.group(2), environ, what="push URL") if ref else spec
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigurationError("not a URL", subject=mask_url(url)) from None
    scheme = parts.scheme.lower()
    masked = mask_url(url)
    if scheme not in PUSH_SCHEMES:
        shown = scheme or "none"
        raise ConfigurationError(
            f"a push goes to rtmp:// or rtmps:// (this URL's scheme is {shown})", subject=masked
        )
    if not host:
        raise ConfigurationError("the URL names no host", subject=masked)
    app, _, key = parts.path.lstrip("/").partition("/")
    if not app:
        raise ConfigurationError("the URL names no application (rtmp://host/app/KEY)", subject=masked)
    key_ref = _REF.match(unquote(key))
    if key_ref:
        key = _read_reference(key_ref.group(1), key_ref.group(2), environ, what="stream key")
        # Keys may carry their own query (Facebook's ``KEY?s_bl=1&s_sc=...``): kept as written.
        key = quote(key.strip("/"), safe="/-_.~=&?")
        url = f"{scheme}://{parts.netloc}/{app}/{key}" + (f"?{parts.query}" if parts.query else "")
    if not key.strip("/") and not parts.query:
        raise ConfigurationError("the URL has no stream key (rtmp://host/app/KEY)", subject=masked)
    port = port or DEFAULT_PORTS[scheme]
    return PushTarget(
        url=url,
        masked=masked,
        scheme=scheme,
        host=host,
        port=port,
        app=app,
        secrets=_spellings(url, key, parts.query, parts.password),
    )


def _read_reference(kind: str, name: str, environ: Mapping[str, str], *, what: str) -> str:
    name = name.strip()
    if kind == "env":
        value = environ.get(name)
        if not value or not value.strip():
            raise ConfigurationError(
                f"the {what} was to come from this environment variable, which is not set",
                subject=f"env:{name}",
            )
        return value.strip()
    path = Path(name).expanduser()
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(
            f"the {what} file cannot be read ({exc.strerror})", subject=f"file:{path}"
        ) from None
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise ConfigurationError(f"the {what} file is too large to hold one", subject=f"file:{path}")
    lines = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        raise ConfigurationError(f"the {what} file is empty", subject=f"file:{path}")
    return lines[0]


def _spellings(url: str, key: str, query: str, password: str | None) -> tuple[str, ...]:
    """The secret as ffmpeg or a server may echo it: raw, percent-decoded and -encoded, whole URL."""
    found: set[str] = {url}
    for secret in (key.strip("/"), query, password or ""):
        if len(secret) < 3:
            continue  # a one-letter key would blank every such letter in the text; the URL form remains
        found.update({secret, unquote(secret), quote(unquote(secret), safe="")})
    return tuple(sorted(found, key=len, reverse=True))


def _netloc(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


__all__ = ["MASK", "PUSH_SCHEMES", "PushTarget", "is_reference", "mask_url", "redact", "resolve_target"]
