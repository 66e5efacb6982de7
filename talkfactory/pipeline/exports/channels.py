"""Channel presets: the package's ``channels.toml`` plus the user's own file, checked into ``ChannelSpec``.

The presets are data (``channels.toml`` beside this module), each limit with the page it comes
from. A user's TOML or YAML file (``TALKFACTORY_CHANNELS_FILE``) adds channels or overrides preset
fields one by one; ``extends = "youtube"`` derives a new channel from another. Any error in either
file is a ``ConfigurationError`` naming the file, the line and the cause, because a bad preset
must stop a job before it renders anything.

Each channel carries a ``spec_version`` (``2026-12-05.1/youtube.v1``): exports record it, and
nightly re-processing re-makes exports whose version is older. A channel the user's file touched
gets ``+user.<hash>`` of its final values, so editing the file re-makes its exports too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from talkfactory.errors import ConfigurationError
from talkfactory.infra.ffmpeg.args import Rate
from talkfactory.infra.media.channel_encode import ChannelEncodeOptions, gop_frames_for

PRESETS_FILE = Path(__file__).with_name("channels.toml")
MASTER = "master"

LIMIT_FIELDS: tuple[str, ...] = (
    "width",
    "height",
    "min_duration_s",
    "max_duration_s",
    "max_bytes",
    "min_fps",
    "max_fps",
    "video_maxrate_kbps",
    "keyframe_interval_s",
    "audio_rate",
    "audio_channels",
    "audio_bitrate_kbps",
    "loudness_lufs",
    "true_peak_db",
)
"""Fields that are platform limits or delivery targets: each needs a source or an ``unverified`` entry."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""Channel names become folder names: lower case, digits, ``.``, ``_``, ``-``; no path tricks."""
_NAME_RULE = "must be lower-case letters, digits, '.', '_' or '-' (it names a folder)"
_META = frozenset({"extends"})
_SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")


class FieldProblem(ValueError):
    """A consistency error about one field, so a loader can point at the line that set it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ChannelSpec(BaseModel):
    """One channel: the output's shape, limits, audio targets and extras, with where each limit comes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    spec_version: str
    """``<file spec_version>/<name>.v<version>`` (``+user.<hash>`` when the user's file changed it)."""
    description: str = ""
    version: int = Field(default=1, ge=1)
    kind: Literal["file", "rtmp"] = "file"
    """``file``: an exported video. ``rtmp``: live ingest (issue 12), with the ``rtmp_*`` fields."""

    width: int | None = Field(default=None, ge=16, le=8192)
    """Output size; both None (``master``): the render's native size."""
    height: int | None = Field(default=None, ge=16, le=8192)
    min_duration_s: float | None = Field(default=None, gt=0)
    max_duration_s: float | None = Field(default=None, gt=0)
    max_bytes: int | None = Field(default=None, gt=0)
    min_fps: float | None = Field(default=None, gt=0)
    max_fps: float | None = Field(default=None, gt=0)
    video_maxrate_kbps: int | None = Field(default=None, gt=0)
    keyframe_interval_s: float = Field(default=2.0, gt=0, le=20)
    audio_rate: int = Field(default=48_000, ge=8_000, le=192_000)
    audio_channels: int = Field(default=2, ge=1, le=8)
    audio_bitrate_kbps: int = Field(default=192, ge=16, le=1024)
    loudness_lufs: float = Field(default=-14.0, ge=-70, le=0)
    true_peak_db: float = Field(default=-1.0, ge=-20, le=0)

    captions: bool = True
    burn_captions: bool = False
    cover: bool = True

    sources: dict[str, str] = Field(default_factory=dict)
    """Field -> where its value comes from (a URL, then a note)."""
    unverified: tuple[str, ...] = ()
    """Fields with no official source (third-party claims, house defaults)."""
    notes: dict[str, str] = Field(default_factory=dict)
    overridden: tuple[str, ...] = ()
    """Fields the user's file set (their sources no longer apply)."""

    destination: str | None = None
    """Where this channel's files are published (a folder or ``s3://bucket/prefix``), instead of
    ``<channel>/`` inside the run's exports location. Credentials come from settings, never from here."""

    rtmp_url: str | None = None
    """Ingest URL without the key (``kind = "rtmp"`` only)."""
    rtmp_key: str | None = None
    """Where the stream key is: ``env:NAME`` or ``file:/path``; never the key itself (files get logged)."""
    rtmp_max_bitrate_kbps: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ChannelSpec:
        if not _NAME.match(self.name):
            raise FieldProblem(
                "name",
                f"channel name {self.name!r} {_NAME_RULE}",
            )
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise FieldProblem(
                missing, "width and height go together (both absent: the render's native size)"
            )
        for side in ("width", "height"):
            value = getattr(self, side)
            if value is not None and value % 2:
                raise FieldProblem(side, f"{side} must be even (H.264 4:2:0), got {value}")
        for low, high in (("min_duration_s", "max_duration_s"), ("min_fps", "max_fps")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise FieldProblem(low, f"{low} ({lo}) is above {high} ({hi})")
        if self.destination is not None:
            scheme, sep, rest = self.destination.partition("://")
            if sep and scheme != "s3":
                raise FieldProblem("destination", "destination must be a folder or s3://bucket/prefix")
            if sep and "@" in rest.split("/", 1)[0]:
                raise FieldProblem(
                    "destination", "destination must not hold credentials (set TALKFACTORY_S3_*)"
                )
        known = set(type(self).model_fields)
        for table in ("sources", "notes", "unverified"):
            stray = sorted(set(getattr(self, table)) - known)
            if stray:
                raise FieldProblem(table, f"{table} names unknown fields: {', '.join(stray)}")
        for rtmp_field in ("rtmp_url", "rtmp_key", "rtmp_max_bitrate_kbps"):
            if self.kind == "file" and getattr(self, rtmp_field) is not None:
                raise FieldProblem(rtmp_field, f'{rtmp_field} only applies to kind = "rtmp"')
        if self.kind == "rtmp" and self.rtmp_url is None:
            raise FieldProblem("kind", 'kind = "rtmp" needs rtmp_url')
        if self.rtmp_key is not None and not _SECRET_REF.match(self.rtmp_key):
            # The value is not echoed: it may be the key.
            raise FieldProblem("rtmp_key", "rtmp_key must be env:NAME or file:/path, never the key itself")
        return self

    def __hash__(self) -> int:
        # The name and version stand for the values (the provenance tables are dicts, not hashable).
        return hash((self.name, self.spec_version))

    # -- derived

    @property
    def native_size(self) -> bool:
        return self.width is None

    @property
    def aspect(self) -> float | None:
        return None if self.width is None or self.height is None else self.width / self.height

    def limit_source(self, field: str) -> str | None:
        return self.sources.get(field)

    def encode_options(self, fps: Rate, *, audio_filters: tuple[str, ...] = ()) -> ChannelEncodeOptions:
        """The encoder options this channel asks for at ``fps`` (``audio_filters``: the loudness chain)."""
        return ChannelEncodeOptions(
            gop_frames=gop_frames_for(fps, self.keyframe_interval_s),
            maxrate_kbps=self.video_maxrate_kbps,
            audio_rate=self.audio_rate,
            audio_channels=self.audio_channels,
            audio_bitrate_kbps=self.audio_bitrate_kbps,
            audio_filters=audio_filters,
        )


class ChannelRegistry:
    """The channels in force: presets merged with the user's file."""

    def __init__(
        self, channels: Mapping[str, ChannelSpec], *, spec_version: str, files: tuple[str, ...]
    ) -> None:
        self._channels = dict(channels)
        self.spec_version = spec_version
        self.files = files
        """The files read, package presets first."""

    def get(self, name: str) -> ChannelSpec:
        try:
            return self._channels[name]
        except KeyError:
            raise ConfigurationError(
                f"unknown channel {name!r}; known channels: {', '.join(self.names())}"
                + (f" (from {', '.join(self.files)})" if self.files else "")
            ) from None

    def names(self) -> list[str]:
        """Channel names, ``master`` first, then in file order."""
        return sorted(self._channels, key=lambda n: (n != MASTER,))

    def all(self) -> list[ChannelSpec]:
        return [self._channels[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __len__(self) -> int:
        return len(self._channels)


# ---------------------------------------------------------------- reading files


@dataclass(frozen=True)
class _File:
    path: str
    text: str
    kind: Literal["toml", "yaml"]
    data: dict[str, Any]


def _error(file: _File, line: int | None, what: str) -> ConfigurationError:
    where = f"line {line}: " if line is not None else ""
    return ConfigurationError(f"{where}{what}", subject=file.path)


def _read(path: Path) -> _File:
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigurationError("a channels file must be .toml, .yaml or .yml", subject=name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError("channels file not found", subject=name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"channels file cannot be read: {exc}", subject=name) from exc
    if suffix == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+)", str(exc))
            line = int(match.group(1)) if match else None
            raise ConfigurationError(f"line {line}: not valid TOML: {exc}", subject=name) from exc
        kind: Literal["toml", "yaml"] = "toml"
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise ConfigurationError(
                f"line {line}: not valid YAML: {exc.problem or exc}", subject=name
            ) from exc
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"not valid YAML: {exc}", subject=name) from exc
        kind = "yaml"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            "line 1: the file must hold a table with a `channels` table in it", subject=name
        )
    return _File(path=name, text=text, kind=kind, data=data)


_HEADER = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*(?:#.*)?$")


def _toml_key(part: str) -> str:
    return part.strip().strip("\"'")


def _toml_line(text: str, channel: str | None, field: str | None) -> int | None:
    """The line setting ``field`` in ``[channels.<channel>]`` (else the table, else its first mention)."""
    lines = text.splitlines()
    if channel is None:
        for i, line in enumerate(lines, 1):
            if field is not None and re.match(rf"^\s*{re.escape(field)}\s*=", line):
                return i
        return None
    table_line: int | None = None
    in_table = False
    for i, line in enumerate(lines, 1):
        header = _HEADER.match(line)
        if header is not None:
            parts = [_toml_key(p) for p in re.split(r"\.(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", header.group(1))]
            in_table = parts[:2] == ["channels", channel] and len(parts) == 2
            if in_table and table_line is None:
                table_line = i
            # A field inside a sub-table ([channels.x.sources]) is reported at that sub-table.
            if parts[:2] == ["channels", channel] and len(parts) == 3 and parts[2] == field:
                return i
            continue
        if in_table and field is not None:
            key = re.match(r"^\s*(\"[^\"]+\"|'[^']+'|[A-Za-z0-9_-]+)\s*=", line)
            if key is not None and _toml_key(key.group(1)) == field:
                return i
    if table_line is not None:
        return table_line
    for i, line in enumerate(lines, 1):
        if re.search(rf"(^|[.\s\"']){re.escape(channel)}([.\s\"'=\]]|$)", line):
            return i
    return None


def _yaml_line(text: str, channel: str | None, field: str | None) -> int | None:
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    best: int | None = None
    for key in ("channels", channel, field):
        if key is None or not isinstance(node, yaml.MappingNode):
            break
        found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
        if found is None:
            break
        best = found[0].start_mark.line + 1
        node = found[1]
    return best


def _line(file: _File, channel: str | None, field: str | None) -> int | None:
    return (_toml_line if file.kind == "toml" else _yaml_line)(file.text, channel, field)


def _channels_table(file: _File, *, package: bool) -> dict[str, dict[str, Any]]:
    allowed = {"channels", "spec_version"} if package else {"channels"}
    for key in file.data:
        if key not in allowed:
            raise _error(
                file,
                _line(file, None, key),
                f"unknown top-level key {key!r} (expected: {', '.join(sorted(allowed))})",
            )
    table = file.data.get("channels", {})
    if not isinstance(table, dict):
        raise _error(file, _line(file, None, "channels"), "`channels` must be a table of channel tables")
    out: dict[str, dict[str, Any]] = {}
    for name, fields in table.items():
        if not isinstance(fields, dict):
            raise _error(file, _line(file, "channels", name), f"channel {name!r} must be a table of fields")
        if not _NAME.match(str(name)):
            raise _error(
                file,
                _line(file, str(name), None),
                f"channel name {name!r} {_NAME_RULE}",
            )
        out[str(name)] = dict(fields)
    return out


# ---------------------------------------------------------------- merging and resolving


_PROVENANCE = frozenset({"sources", "notes", "unverified", "overridden"})


@dataclass
class _Raw:
    """One channel's fields before validation, which file (and channel table) set each, what the user set."""

    fields: dict[str, Any]
    origin: dict[str, tuple[_File, str]]
    user_fields: set[str]
    user_touched: bool


def _combine(base: dict[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """``own`` over ``base`` field by field; a value set in ``own`` drops ``base``'s source and notes."""
    set_here = {k for k in own if k not in _PROVENANCE and k not in _META}
    fields = dict(base)
    fields["sources"] = {k: v for k, v in dict(base.get("sources") or {}).items() if k not in set_here}
    fields["notes"] = {k: v for k, v in dict(base.get("notes") or {}).items() if k not in set_here}
    fields["unverified"] = [k for k in (base.get("unverified") or ()) if k not in set_here]
    for key, value in own.items():
        if key in ("sources", "notes") and isinstance(value, dict):
            fields[key] = {**fields[key], **value}
        elif key == "unverified" and isinstance(value, list | tuple):
            fields[key] = [*fields[key], *(v for v in value if v not in fields[key])]
        else:
            fields[key] = value
    return fields


def _merge(
    package: _File, pkg: dict[str, dict[str, Any]], user: _File | None, usr: dict[str, dict[str, Any]]
) -> dict[str, _Raw]:
    raws = {name: _Raw(dict(f), {k: (package, name) for k in f}, set(), False) for name, f in pkg.items()}
    if user is None:
        return raws
    for name, fields in usr.items():
        origin = {k: (user, name) for k in fields}
        user_fields = {k for k in fields if k not in _PROVENANCE and k not in _META}
        raw = raws.get(name)
        if raw is None:
            raws[name] = _Raw(dict(fields), origin, user_fields, True)
        else:
            raws[name] = _Raw(_combine(raw.fields, fields), {**raw.origin, **origin}, user_fields, True)
    return raws


def _resolve(name: str, raws: dict[str, _Raw], stack: tuple[str, ...] = ()) -> _Raw:
    """The channel with ``extends`` applied (recursively; loops and unknown parents are errors)."""
    raw = raws[name]
    parent = raw.fields.get("extends")
    if parent is None:
        return raw
    file, table = raw.origin["extends"]
    if not isinstance(parent, str) or parent not in raws:
        known = ", ".join(sorted(raws))
        raise _error(
            file,
            _line(file, table, "extends"),
            f"channel {name!r} extends unknown channel {parent!r} (known: {known})",
        )
    if parent == name or parent in stack:
        chain = " -> ".join((*stack, name, parent))
        raise _error(file, _line(file, table, "extends"), f"channel {name!r}: extends loops ({chain})")
    base = _resolve(parent, raws, (*stack, name))
    own = {k: v for k, v in raw.fields.items() if k not in _META}
    return _Raw(
        _combine(base.fields, own),
        {**base.origin, **raw.origin},
        raw.user_fields | base.user_fields,
        raw.user_touched or base.user_touched,
    )


def _user_hash(fields: Mapping[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def _build(name: str, raw: _Raw, spec_version: str) -> ChannelSpec:
    fields = {k: v for k, v in raw.fields.items() if k not in _META}
    if raw.user_touched:
        # Fields the user set drop the preset's sources: the value is the user's now.
        fields["sources"] = {
            k: v for k, v in dict(fields.get("sources") or {}).items() if k not in raw.user_fields
        }
        fields["unverified"] = [k for k in (fields.get("unverified") or ()) if k not in raw.user_fields]
        fields["overridden"] = sorted(raw.user_fields)
    version = fields.get("version", 1)
    suffix = f"+user.{_user_hash(fields)}" if raw.user_touched else ""
    try:
        return ChannelSpec(name=name, spec_version=f"{spec_version}/{name}.v{version}{suffix}", **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        problem = (first.get("ctx") or {}).get("error")
        if not loc and isinstance(problem, FieldProblem):
            loc = [problem.field]
        field = loc[0] if loc else None
        fallback = raw.origin.get("extends") or next(iter(raw.origin.values()), None)
        file, table = raw.origin.get(field or "", fallback) or (None, name)
        message = str(first.get("msg", exc)).removeprefix("Value error, ")
        given = first.get("input")
        # Model-level problems say the value themselves (or must not: rtmp_key).
        value = f" (got {given!r})" if field and not isinstance(given, dict | BaseModel) else ""
        what = f"channel {name!r}" + (f", field {'.'.join(loc)!r}" if field else "") + f": {message}{value}"
        if file is None:
            raise ConfigurationError(what) from exc
        raise _error(file, _line(file, table, field), what) from exc


# ---------------------------------------------------------------- loading (cached)


_cache: dict[tuple[Any, ...], ChannelRegistry] = {}
_cache_lock = threading.Lock()


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (str(path), -1, -1)
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def load_channels(user_file: Path | str | None = None) -> ChannelRegistry:
    """The presets plus ``user_file`` (TOML, or YAML by suffix), cached per file and modification time."""
    user_path = Path(os.fspath(user_file)).expanduser() if user_file is not None else None
    key = (_stamp(PRESETS_FILE), _stamp(user_path) if user_path is not None else None)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    registry = _load(PRESETS_FILE, user_path)
    with _cache_lock:
        _cache[key] = registry
    return registry


def _load(presets: Path, user_path: Path | None) -> ChannelRegistry:
    package = _read(presets)
    spec_version = package.data.get("spec_version")
    if not isinstance(spec_version, str) or not spec_version:
        raise _error(package, _line(package, None, "spec_version"), "`spec_version` (a string) is missing")
    pkg = _channels_table(package, package=True)
    user = _read(user_path) if user_path is not None else None
    usr = _channels_table(user, package=False) if user is not None else {}
    raws = _merge(package, pkg, user, usr)
    channels = {name: _build(name, _resolve(name, raws), spec_version) for name in raws}
    if MASTER not in channels:
        raise _error(package, None, f"the presets have no {MASTER!r} channel")
    files = (package.path,) + ((user.path,) if user is not None else ())
    return ChannelRegistry(channels, spec_version=spec_version, files=files)


def channels_from_settings() -> ChannelRegistry:
    """``load_channels`` with the user's file from settings (``TALKFACTORY_CHANNELS_FILE``)."""
    from talkfactory.infra.settings import get_settings

    return load_channels(get_settings().channels_file)


# ---------------------------------------------------------------- listing


def _clock(seconds: float) -> str:
    total = int(round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def describe_channels(registry: ChannelRegistry) -> list[dict[str, str]]:
    """One row per channel for ``talkfactory channels``: size, length, loudness, bitrate cap, unverified."""
    rows: list[dict[str, str]] = []
    for spec in registry.all():
        length = "-"
        if spec.max_duration_s is not None or spec.min_duration_s is not None:
            low = _clock(spec.min_duration_s) if spec.min_duration_s is not None else "0:00"
            length = (
                f"{low}-{_clock(spec.max_duration_s)}" if spec.max_duration_s is not None else f">= {low}"
            )
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "size": "native" if spec.width is None else f"{spec.width}x{spec.height}",
                "length": length,
                "max_size": "-" if spec.max_bytes is None else f"{spec.max_bytes / 1e9:g} GB",
                "fps": "-" if spec.max_fps is None else f"<= {spec.max_fps:g}",
                "loudness": f"{spec.loudness_lufs:g} LUFS, {spec.true_peak_db:g} dBTP",
                "bitrate_cap": "-"
                if spec.video_maxrate_kbps is None
                else f"{spec.video_maxrate_kbps / 1000:g} Mb/s",
                "keyframes": f"every {spec.keyframe_interval_s:g} s",
                "audio": f"AAC {spec.audio_rate / 1000:g} kHz {spec.audio_channels} ch"
                f" {spec.audio_bitrate_kbps} kb/s",
                "unverified": ", ".join(spec.unverified) or "-",
                "user": ", ".join(spec.overridden) or ("-" if "+user." not in spec.spec_version else "new"),
                "spec_version": spec.spec_version,
                "description": spec.description,
            }
        )
    return rows


__all__ = [
    "LIMIT_FIELDS",
    "MASTER",
    "PRESETS_FILE",
    "ChannelRegistry",
    "ChannelSpec",
    "FieldProblem",
    "channels_from_settings",
    "describe_channels",
    "load_channels",
]
