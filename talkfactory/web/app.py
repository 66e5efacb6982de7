"""The operator's page: recordings, one recording's renders, avatars, uploads, live renders.

Server-rendered (FastAPI + Jinja2 templates shipped in the package); every page works without
JavaScript, and ``static/live.js`` (a few lines, no framework) refreshes the parts marked
``data-refresh`` in place. It reads lineage and the stores; it never runs a flow: an upload goes to
the ingest location and the factory's scan takes it from there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from talkfactory.errors import ObjectNotFoundError, TalkfactoryError
from talkfactory.infra.lineage.activity import running_renders
from talkfactory.infra.lineage.avatars import list_avatars, set_avatar_active
from talkfactory.infra.lineage.chain import RecordingChain, channel_of, recording_chain
from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.lineage.overview import STATES, RecordingFilter, RenderTarget, list_recordings
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.settings import Settings
from talkfactory.models.lipsync.registry import backend_version
from talkfactory.pipeline.checkpoints import resolve_checkpoint
from talkfactory.pipeline.ingest import ingest_location
from talkfactory.pipeline.jobs.model import RenderParams
from talkfactory.web import auth
from talkfactory.web.media import (
    Located,
    OutsideStoresError,
    RangeNotSatisfiableError,
    StoreResolver,
    iter_range,
    iter_whole,
    parse_range,
    thumbnail,
    zip_stream,
)
from talkfactory.web.upload import UploadResult, accept_upload

HERE = Path(__file__).parent


def prefect_ui_url() -> str | None:
    """``PREFECT_UI_URL``, else the API URL without its ``/api``; None when neither is set."""
    ui = os.environ.get("PREFECT_UI_URL")
    if ui:
        return ui.rstrip("/")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        api = api.rstrip("/")
        return api[: -len("/api")] if api.endswith("/api") else api
    return None


log = logging.getLogger(__name__)


def render_target(settings: Settings) -> RenderTarget | None:
    """What nightly-reprocess would render with now, from this server's settings; None when the
    model cannot be read here (then nothing reads as stale)."""
    try:
        version = backend_version(
            settings.backend, checkpoint=resolve_checkpoint(settings.checkpoint, settings)
        )
    except TalkfactoryError as exc:
        log.warning("cannot tell stale recordings (%s): the model is not at hand here", exc)
        return None
    params = RenderParams(backend=settings.backend, crf=settings.crf, preset=settings.preset)
    return RenderTarget(version, params.params_hash())


def create_app(
    settings: Settings,
    *,
    token: str | None = None,
    extra_roots: Iterable[str] = (),
    repo: LineageRepository | None = None,
) -> FastAPI:
    """The app. ``token``: required of every request when set (``auth.token_needed`` decides).
    ``extra_roots``: more store URLs whose objects the page may serve (``talkfactory run --out`` folders)."""
    app = FastAPI(title="talkfactory", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(auth.guard(token))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    if repo is None:
        ensure_schema(settings.resolved_database_url)
    lineage = repo or LineageRepository.from_url(settings.resolved_database_url)
    resolver = StoreResolver(settings, extra_roots)
    ui = prefect_ui_url()
    templates.env.globals.update(prefect_ui=ui, channel_of=channel_of)
    templates.env.filters["dur"] = _duration
    templates.env.filters["short"] = lambda name: _short_name(name, key_root())
    templates.env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else ""
    app.state.lineage, app.state.resolver = lineage, resolver
    target = render_target(settings)  # once: a wav2lip checkpoint is hashed to know its version

    def page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, ctx, status_code=status_code)

    def located(uri: str | None) -> Located:
        if not uri:
            raise HTTPException(404, "nothing recorded")
        try:
            return resolver.locate(uri)
        except OutsideStoresError as exc:
            raise HTTPException(403, f"refused: {exc.message}") from exc

    def key_root() -> str:
        if not settings.ingest_url:
            return ""
        return ingest_location(resolver.store(settings.ingest_url)).key_prefix

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/recordings", status_code=303)

    @app.get("/recordings", response_class=HTMLResponse)
    def recordings(
        request: Request,
        state: str | None = None,
        prefix: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page_no: Annotated[int, Query(alias="page", ge=1)] = 1,
        fragment: bool = False,
    ) -> HTMLResponse:
        if state and state not in STATES:
            raise HTTPException(400, f"unknown state {state!r}")
        f = RecordingFilter(
            since=_day(since),
            until=_day(until, next_day=True),
            state=state or None,
            prefix=prefix or None,
            page=page_no,
        )
        result = list_recordings(lineage, f, key_root=key_root(), target=target)
        query = {
            k: v for k, v in (("state", state), ("prefix", prefix), ("since", since), ("until", until)) if v
        }
        return page(
            request,
            "recordings_rows.html" if fragment else "recordings.html",
            result=result,
            states=STATES,
            query=query,
            filters=f,
        )

    @app.get("/recordings/{recording_id}", response_class=HTMLResponse)
    def recording(request: Request, recording_id: int) -> HTMLResponse:
        chain = _chain(recording_id)
        return page(request, "recording.html", chain=chain, grid=_grid(chain))

    @app.get("/recordings/{recording_id}/lineage.json")
    def recording_json(recording_id: int) -> JSONResponse:
        return JSONResponse(_chain(recording_id).to_dict())

    def _chain(recording_id: int) -> RecordingChain:
        chain = recording_chain(lineage, recording_id)
        if chain is None:
            raise HTTPException(404, f"no recording {recording_id}")
        return chain

    @app.get("/uploads/{source_id}", response_class=HTMLResponse)
    def upload_row(request: Request, source_id: int) -> HTMLResponse:
        src = lineage.find_source_object(str(source_id))
        if src is None:
            raise HTTPException(404, f"no upload {source_id}")
        if src.recording_id is not None:
            return RedirectResponse(f"/recordings/{src.recording_id}", status_code=303)  # type: ignore[return-value]
        attempts = lineage.attempts_for("source", src.id)
        return page(request, "upload_row.html", src=src, attempts=attempts)

    def render_file(render_id: int) -> Located:
        r = lineage.get_render_row(render_id)
        if r is None:
            raise HTTPException(404, f"no render {render_id}")
        exports = [e for e in lineage.exports_for_recording(r.recording_id) if e.render_id == r.id]
        return located(exports[0].uri if exports else r.output_uri)

    @app.get("/renders/{render_id}/video.mp4")
    def render_video(request: Request, render_id: int) -> Response:
        return _serve(request, render_file(render_id), "video/mp4")

    @app.get("/renders/{render_id}/thumb.jpg")
    def render_thumb(render_id: int) -> FileResponse:
        return _thumb(render_file(render_id))

    @app.get("/exports/{export_id}")
    def export_download(request: Request, export_id: int) -> Response:
        e = lineage.find_export_by_id(export_id)
        if e is None:
            raise HTTPException(404, f"no export {export_id}")
        loc = located(e.uri)
        return _serve(request, loc, "video/mp4", attachment=True)

    @app.get("/files/exports/{key:path}")
    def export_by_key(request: Request, key: str) -> Response:
        """An export by its key in the exports store (links people share); ``../`` cannot leave it."""
        if not settings.exports_url:
            raise HTTPException(404, "no exports location configured (TALKFACTORY_EXPORTS_URL)")
        try:
            loc = resolver.in_store(settings.exports_url, key)
        except OutsideStoresError as exc:
            raise HTTPException(403, f"refused: {exc.message}") from exc
        return _serve(request, loc, "video/mp4", attachment=True)

    @app.get("/recordings/{recording_id}/channels/{channel}.zip")
    def channel_zip(recording_id: int, channel: str) -> StreamingResponse:
        chain = _chain(recording_id)
        exports = chain.exports_by_channel(published_only=True).get(channel)
        if not exports:
            raise HTTPException(404, f"no exports in channel {channel!r}")
        files = [located(e.uri) for e in exports]
        name = f"recording-{recording_id}-{channel}.zip"
        return StreamingResponse(
            zip_stream(files),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/avatars", response_class=HTMLResponse)
    def avatars(request: Request) -> HTMLResponse:
        by_name: dict[str, list[Any]] = {}
        for v in list_avatars(lineage, include_inactive=True):
            by_name.setdefault(v.name, []).append(v)
        return page(request, "avatars.html", avatars=by_name)

    @app.get("/avatars/{avatar_id}/preview.jpg")
    def avatar_preview(avatar_id: int) -> FileResponse:
        a = lineage.get_avatar(avatar_id)
        if a is None:
            raise HTTPException(404, f"no avatar {avatar_id}")
        return _thumb(located(a.uri))

    @app.post("/avatars/active")
    def avatar_active(name: Annotated[str, Form()], active: Annotated[str, Form()]) -> RedirectResponse:
        if not set_avatar_active(lineage, name, active == "1"):
            raise HTTPException(404, f"no avatar named {name!r}")
        return RedirectResponse("/avatars", status_code=303)

    @app.get("/upload", response_class=HTMLResponse)
    def upload_form(request: Request) -> HTMLResponse:
        return page(
            request,
            "upload.html",
            results=[],
            configured=bool(settings.ingest_url),
            limit=settings.web_max_upload_mb,
        )

    @app.post("/upload", response_class=HTMLResponse)
    async def upload(request: Request) -> HTMLResponse:
        if not settings.ingest_url:
            raise HTTPException(409, "no ingest location configured (TALKFACTORY_INGEST_URL)")
        limit = int(settings.web_max_upload_mb * 2**20)
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit * 20 + 2**20:
            raise HTTPException(413, "upload larger than the limit (TALKFACTORY_WEB_MAX_UPLOAD_MB)")
        store = resolver.store(settings.ingest_url)
        results: list[UploadResult] = []
        async with request.form(max_files=20, max_fields=10) as form:
            for item in form.getlist("files"):
                if isinstance(item, str) or not item.filename:
                    continue
                # Probing and the put block for seconds on a big file: off the event loop.
                results.append(
                    await run_in_threadpool(
                        accept_upload,
                        item.filename,
                        item.file,
                        store,
                        settings.work_dir,
                        limit_bytes=limit,
                    )
                )
        status = 200 if results and all(r.ok for r in results) else 422 if results else 400
        return page(
            request,
            "upload.html",
            results=results,
            configured=True,
            limit=settings.web_max_upload_mb,
            status_code=status,
        )

    @app.get("/live", response_class=HTMLResponse)
    def live(request: Request, fragment: bool = False) -> HTMLResponse:
        rows = running_renders(lineage)
        return page(request, "live_rows.html" if fragment else "live.html", rows=rows, now=datetime.now(UTC))

    @app.get(auth.HEALTH_PATH)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(ObjectNotFoundError)
    def _missing(request: Request, exc: ObjectNotFoundError) -> Response:
        return HTMLResponse(f"not found: {exc.message}", status_code=404)

    @app.exception_handler(TalkfactoryError)
    def _error(request: Request, exc: TalkfactoryError) -> Response:
        return HTMLResponse(f"error: {exc.message}", status_code=500)

    def _thumb(loc: Located) -> FileResponse:
        try:
            path = thumbnail(loc, settings.cache_dir)
        except TalkfactoryError as exc:
            raise HTTPException(422, f"no thumbnail: {exc.message}") from exc
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app


def _serve(request: Request, loc: Located, media_type: str, *, attachment: bool = False) -> Response:
    """The object, whole (200) or the one byte range asked for (206), streamed from its store."""
    info = loc.stat()
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{info.etag}"'}
    if attachment:
        headers["Content-Disposition"] = f'attachment; filename="{_ascii_name(loc.name)}"'
    try:
        wanted = parse_range(request.headers.get("range"), info.size)
    except RangeNotSatisfiableError:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{info.size}"})
    if wanted is None:
        headers["Content-Length"] = str(info.size)
        return StreamingResponse(iter_whole(loc), media_type=media_type, headers=headers)
    start, end = wanted
    headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(
        iter_range(loc, start, end), status_code=206, media_type=media_type, headers=headers
    )


def _short_name(name: str, key_root: str) -> str:
    """A key relative to the ingest location; the file name of anything else (a CLI run's recording)."""
    if key_root and name.startswith(key_root):
        return name[len(key_root) :]
    return name.rsplit("/", 1)[-1] if "/" in name else name


def _ascii_name(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


def _day(text: str | None, *, next_day: bool = False) -> datetime | None:
    if not text:
        return None
    try:
        d = date.fromisoformat(text)
    except ValueError as exc:
        raise HTTPException(400, f"not a date (YYYY-MM-DD): {text!r}") from exc
    start = datetime.combine(d, time(), tzinfo=UTC)
    return start + timedelta(days=1) if next_day else start


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _grid(chain: RecordingChain) -> dict[str, Any]:
    """Clips (rows) x avatars (columns) of the renders; ``whole`` is the row of whole-track renders."""
    avatars: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    clips = {c.id: c for c in chain.clips}
    labels: dict[str, Any] = {}
    for c in chain.clips:
        label = f"{c.start_s:.1f}-{c.end_s:.1f} s"
        rows.setdefault(label, {})
        labels[label] = c
    for link in chain.renders:
        o = link.overview
        if o.avatar_name not in avatars:
            avatars.append(o.avatar_name)
        clip = clips.get(o.render.clip_id) if o.render.clip_id else None
        label = o.clip_span if clip is None else f"{clip.start_s:.1f}-{clip.end_s:.1f} s"
        rows.setdefault(label, {})[o.avatar_name] = link
        labels.setdefault(label, clip)
    return {"avatars": avatars, "rows": rows, "clips": labels}
