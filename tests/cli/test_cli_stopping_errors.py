"""Errors that stop a command before any work: one clear line, exit 2, no traceback on the terminal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import read_only_dir, tf, tone_flv
from tests.fixtures.servers import free_port


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("material")
    import cv2
    import numpy as np

    avatar = root / "face.png"
    cv2.imwrite(str(avatar), np.full((64, 64, 3), 128, np.uint8))
    return tone_flv(root / "rec.flv", 3.0), avatar


def _one_clear_line(res: subprocess.CompletedProcess[str], *phrases: str) -> str:
    text = res.stdout + res.stderr
    assert "Traceback" not in text and "Fatal Python error" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert len(text.strip().splitlines()) <= 3, text
    return errors[0]


def test_corrupt_sqlite_lineage_names_the_file(material, tmp_path: Path) -> None:
    rec, avatar = material
    home = tmp_path / "home"
    home.mkdir()
    (home / "lineage.db").write_bytes(b"this is not a database, it is a note" * 100)
    run = tf("run", str(rec), "--avatar", str(avatar), "--out", str(tmp_path / "out"), "--whole-track",
             home=home, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2
    line = _one_clear_line(run, str(home / "lineage.db"), "not a readable SQLite database", "move it aside")
    assert "lineage database" in line
    assert not list((tmp_path / "out").glob("*.mp4"))
    upgrade = tf("db", "upgrade", home=home, cwd=tmp_path)
    assert upgrade.returncode == 2
    _one_clear_line(upgrade, "lineage.db", "not a readable SQLite database")


def test_read_only_sqlite_lineage_says_it_cannot_be_written(material, tmp_path: Path) -> None:
    rec, avatar = material
    home = tmp_path / "home"
    assert tf("db", "upgrade", home=home, cwd=tmp_path).returncode == 0
    with read_only_dir(home):  # the database and its folder: no journal can be created either
        run = tf("run", str(rec), "--avatar", str(avatar), "--out", str(tmp_path / "out"), "--whole-track",
                 home=home, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2
    _one_clear_line(run, "lineage database", "cannot be written")


def test_unreachable_postgres_is_one_line_with_the_password_masked(material, tmp_path: Path) -> None:
    rec, avatar = material
    url = f"postgresql+psycopg2://talk:s3cr3t-pw@127.0.0.1:{free_port()}/lineage"  # nothing listens there
    for args in (
        ("run", str(rec), "--avatar", str(avatar), "--out", str(tmp_path / "out"), "--whole-track"),
        ("db", "upgrade"),
        ("lineage", str(rec)),
    ):
        res = tf(*args, home=tmp_path / "home", cwd=tmp_path, TALKFACTORY_DATABASE_URL=url)
        assert res.returncode == 2, args
        line = _one_clear_line(res, "lineage database", "127.0.0.1", "cannot be reached", "***")
        assert "s3cr3t-pw" not in res.stdout + res.stderr, line


def test_read_only_output_folder_is_a_clear_error(material, tmp_path: Path) -> None:
    rec, avatar = material
    with read_only_dir(tmp_path / "ro") as out:
        res = tf("run", str(rec), "--avatar", str(avatar), "--out", str(out / "renders"), "--whole-track",
                 home=tmp_path / "home", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2
    _one_clear_line(res, str(out / "renders"), "cannot write to the output folder")
