"""The factory's Ray head: ``ray start --head`` with its own token, found and stopped by session."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from talkfactory.factory.local import UpOptions, _start_ray, down, state_file
from talkfactory.factory.processes import FactoryState, RayHead, session_members
from talkfactory.factory.ray_head import ensure_token, head_argv, temp_dir_for
from talkfactory.infra.settings import Settings


def test_head_argv_names_every_port_and_no_dashboard(tmp_path: Path) -> None:
    argv = head_argv(tmp_path, 40001, 3, 1, 40002, 40003)
    assert argv[1:3] == ["start", "--head"]
    pairs = {
        a: b for a, b in zip(argv, argv[1:], strict=False) if a.startswith("--") and not b.startswith("--")
    }
    assert pairs["--port"] == "40001"
    assert pairs["--num-cpus"] == "3" and pairs["--num-gpus"] == "1"
    assert pairs["--include-dashboard"] == "false"
    assert pairs["--dashboard-agent-listen-port"] == "40002" and pairs["--dashboard-port"] == "40003"
    assert "--disable-usage-stats" in argv


def test_token_is_private_and_kept(tmp_path: Path) -> None:
    path = ensure_token(tmp_path / "ray" / "auth_token")
    token = path.read_text()
    assert len(token) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path).read_text() == token, "a second up keeps the cluster's token"


def test_temp_dir_is_short_enough_for_ray_sockets(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120) / "home"
    # Ray binds <temp>/session_<date>_<pid>/sockets/plasma_store; Unix socket paths stop at 107 bytes.
    assert (
        len(str(temp_dir_for(deep))) + len("/session_2026-12-05_16-00-08_931993_78130/sockets/plasma_store")
        < 108
    )
    assert temp_dir_for(deep) != temp_dir_for(tmp_path)


def test_state_file_keeps_the_ray_head(tmp_path: Path) -> None:
    head = RayHead(address="10.0.0.5:40001", session=123, temp_dir="/tmp/x", token_path="/t", log="/l")
    FactoryState(api_url="http://a/api", ray=head, ray_address=head.address).save(tmp_path / "s.json")
    back = FactoryState.load(tmp_path / "s.json")
    assert back is not None and back.ray == head and back.ray_address == "10.0.0.5:40001"


def test_a_given_ray_cluster_starts_nothing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    state = FactoryState(api_url="http://a/api")
    base: dict[str, str] = {}
    opts = UpOptions(project_dir=tmp_path, settings=settings, ray_address="10.0.0.5:6379")
    _start_ray(opts, state, base, 0, tmp_path / "logs")
    assert state.ray is None and base == {"TALKFACTORY_RAY_ADDRESS": "10.0.0.5:6379"}


@pytest.mark.servers
def test_up_starts_a_ray_head_that_down_stops(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    state = FactoryState(api_url="http://a/api")
    base = dict(os.environ)
    opts = UpOptions(project_dir=Path.cwd(), settings=settings, ray_cpus=1)
    _start_ray(opts, state, base, 0, tmp_path / "logs")
    head = state.ray
    try:
        assert head is not None
        assert base["TALKFACTORY_RAY_ADDRESS"] == head.address == state.ray_address
        assert base["RAY_AUTH_MODE"] == "token" and base["RAY_AUTH_TOKEN_PATH"] == head.token_path
        assert session_members(head.session), "Ray's daemons run in the head's session"
        saved = FactoryState.load(state_file(settings))
        assert saved is not None and saved.ray == head, "recorded before anything else can fail"
        token = Path(head.token_path).read_text()
        assert token not in Path(head.log).read_text()
    finally:
        stopped = down(settings, grace_s=2)
    assert [p.role for p, _ in stopped] == ["ray-head"]
    assert not session_members(head.session)
    assert not Path(head.temp_dir).exists()
    assert not state_file(settings).exists()
