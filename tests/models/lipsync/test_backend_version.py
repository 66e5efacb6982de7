"""backend_version (no weights loaded) must always equal the loaded backend's own ``version``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from talkfactory.errors import CheckpointError, ConfigurationError
from talkfactory.models.lipsync.registry import backend_version, make_backend
from tests.fixtures.lipsync import checkpoint_file, random_state_dict, save_checkpoint


def test_weightless_version_matches_the_backend() -> None:
    assert backend_version("weightless") == make_backend("weightless").version
    assert backend_version("weightless").startswith("weightless-")


@pytest.mark.parametrize("kind", ["wrapped-module", "bare"])
def test_wav2lip_version_matches_the_loaded_backend(kind: str) -> None:
    ckpt = str(checkpoint_file(kind))
    version = backend_version("wav2lip", checkpoint=ckpt)
    assert version == make_backend("wav2lip", checkpoint=ckpt).version
    assert version.startswith("wav2lip-")


def test_the_same_weights_in_another_layout_are_another_version() -> None:
    # The version names the file (its bytes), not the tensors it holds.
    wrapped = backend_version("wav2lip", checkpoint=str(checkpoint_file("wrapped-module")))
    assert wrapped != backend_version("wav2lip", checkpoint=str(checkpoint_file("bare")))


def test_a_changed_checkpoint_file_changes_the_version(tmp_path: Path) -> None:
    ckpt = tmp_path / "wav2lip.pth"
    shutil.copyfile(checkpoint_file("bare"), ckpt)
    before = backend_version("wav2lip", checkpoint=str(ckpt))
    assert before == backend_version("wav2lip", checkpoint=str(checkpoint_file("bare")))

    # New weights written over the same path (same size, same layout): a new version.
    save_checkpoint(ckpt, random_state_dict(seed=1), wrapped=False)
    after = backend_version("wav2lip", checkpoint=str(ckpt))
    assert after != before
    assert after == make_backend("wav2lip", checkpoint=str(ckpt)).version


def test_an_unknown_backend_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown backend 'sadtalker'") as err:
        backend_version("sadtalker")
    assert err.value.subject == "backend"
    with pytest.raises(ConfigurationError, match="unknown backend 'sadtalker'"):
        make_backend("sadtalker")


@pytest.mark.parametrize("checkpoint", [None, ""])
def test_wav2lip_without_a_checkpoint_is_a_configuration_error(checkpoint: str | None) -> None:
    with pytest.raises(ConfigurationError, match="needs --checkpoint"):
        backend_version("wav2lip", checkpoint=checkpoint)


def test_wav2lip_with_a_missing_checkpoint_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(CheckpointError) as err:
        backend_version("wav2lip", checkpoint=str(missing))
    assert err.value.subject == str(missing)
