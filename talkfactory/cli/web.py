"""``talkfactory web``: the operator's page (recordings, renders, avatars, uploads, live renders)."""

from __future__ import annotations

import argparse

from talkfactory.cli.common import console


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from talkfactory.infra.settings import get_settings
    from talkfactory.web.app import create_app
    from talkfactory.web.auth import token_needed

    settings = get_settings()
    secret = settings.web_token.get_secret_value() if settings.web_token else None
    token = token_needed(args.host, secret)  # refuses off-loopback without a token
    app = create_app(settings, token=token, extra_roots=args.serve)
    where = f"http://{args.host}:{args.port}/"
    console.print(f"talkfactory page on [bold]{where}[/]" + (" (token required)" if token else ""))
    # Access logs would print ?token= query strings: off. The token is never logged.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def add_web_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    web = sub.add_parser(
        "web",
        help="serve the operator's page (127.0.0.1 by default; a token is needed to bind elsewhere)",
        description="Recordings and their state, renders with players and downloads, avatars, "
        "uploads to the ingest location, live renders. Off loopback it requires TALKFACTORY_WEB_TOKEN.",
    )
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8470, help="port (default 8470)")
    web.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="URL",
        help="another folder or s3:// location whose renders the page may stream (e.g. a `run --out` folder)",
    )
    web.set_defaults(fn=cmd_web)
