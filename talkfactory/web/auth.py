"""Who may use the page: anyone on this machine when it listens on loopback, holders of the token
otherwise; and no cross-site form posts.

The token comes from ``TALKFACTORY_WEB_TOKEN`` (a ``SecretStr``, never logged). A request shows it as
``Authorization: Bearer <token>``, or once as ``?token=<token>``: that answer sets an HttpOnly,
SameSite=Strict cookie and redirects to the same address without it, so it leaves the address bar
and the browser history.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from talkfactory.errors import ConfigurationError

COOKIE = "tf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEALTH_PATH = "/health"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a name is resolved (every address must be loopback)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0])).is_loopback for i in infos)


def token_needed(host: str, token: str | None) -> str | None:
    """The token to require when binding ``host``; ``ConfigurationError`` off loopback without one."""
    if is_loopback(host):
        return token or None
    if not token:
        raise ConfigurationError(
            f"refusing to serve the page on {host} without a token: set TALKFACTORY_WEB_TOKEN "
            "(or bind 127.0.0.1)",
            subject="talkfactory web",
        )
    return token


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def same_origin(request: Request) -> bool:
    """A state-changing request must come from a page of this server (Origin, else Referer)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return False
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


Handler = Callable[[Request], Awaitable[Response]]


def guard(token: str | None) -> Callable[[Request, Handler], Awaitable[Response]]:
    """Starlette middleware: the token check (when ``token``) and the same-origin check for writes."""

    async def middleware(request: Request, call_next: Handler) -> Response:
        if request.url.path == HEALTH_PATH:
            return await call_next(request)  # says "ok" and nothing else: for `factory up` and probes
        if token is not None:
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            query = request.query_params.get("token")
            if _matches(query, token):
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                answer = RedirectResponse(target, status_code=303)
                answer.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return answer
            if not (_matches(bearer, token) or _matches(request.cookies.get(COOKIE), token)):
                return PlainTextResponse("a token is needed (TALKFACTORY_WEB_TOKEN)", status_code=401)
        if request.method not in SAFE_METHODS and not same_origin(request):
            return PlainTextResponse("refused: the request did not come from this page", status_code=403)
        return await call_next(request)

    return middleware
