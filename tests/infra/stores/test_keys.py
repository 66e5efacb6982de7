"""validate_key and friends: pure rules, no store needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkfactory.errors import InvalidKeyError, StorePermanentError
from talkfactory.infra.stores.base import (
    MAX_KEY_BYTES,
    describe_key,
    is_temp_name,
    normalize_store_prefix,
    temp_sibling,
    validate_key,
    validate_prefix,
)


@pytest.mark.parametrize(
    "key",
    [
        "a.flv",
        "live/2024-06-01/room 7/rec.flv",
        "ünïcödé/直播.flv",
        "with:colon=and+plus",
        ".hidden",
        "..double-dot-prefix",
        "a/..b/c..",
        "x" * MAX_KEY_BYTES,
    ],
)
def test_good_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("../../x.flv", "'..' segment"),
        ("a/../b", "'..' segment"),
        ("a/./b", "'.' segment"),
        (".", "'.' segment"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("line\nbreak", "control character"),
        ("cr\rhere", "control character"),
        ("nul\x00", "control character"),
        ("del\x7f", "control character"),
        ("c1\x85", "control character"),
        ("x" * (MAX_KEY_BYTES + 1), "1025 bytes"),
        ("é" * 513, "1026 bytes"),
        ("bad\udc80", "not valid UTF-8"),
    ],
)
def test_bad_keys_raise_naming_the_key(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        validate_key(key)
    error = info.value
    assert isinstance(error, StorePermanentError) and isinstance(error, ValueError)
    assert reason in error.message
    assert error.subject is not None
    assert error.subject.startswith(repr(key)[:20])


def test_long_keys_are_shortened_in_messages() -> None:
    shown = describe_key("k" * 5000)
    assert len(shown) < 150 and "5000 bytes" in shown
    assert describe_key("a\nb") == "'a\\nb'"


def test_prefixes_may_be_empty_or_end_with_a_slash() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("live/") == "live/"
    assert validate_prefix("live/2024-") == "live/2024-"
    for bad in ("../", "a//", "/abs", "a/./", "x\n"):
        with pytest.raises(InvalidKeyError):
            validate_prefix(bad)


def test_store_prefix_normalization() -> None:
    assert normalize_store_prefix("") == ""
    assert normalize_store_prefix("/") == ""
    assert normalize_store_prefix("live") == "live/"
    assert normalize_store_prefix("/live/rooms/") == "live/rooms/"
    with pytest.raises(InvalidKeyError):
        normalize_store_prefix("a/../b")


def test_temp_names_are_hidden_unique_siblings(tmp_path: Path) -> None:
    target = tmp_path / "out" / "final.mp4"
    a, b = temp_sibling(target), temp_sibling(target)
    assert a != b and a.parent == target.parent
    assert a.name.startswith(".final.mp4.tfpart-")
    assert is_temp_name(a.name) and not is_temp_name("final.mp4") and not is_temp_name(".final.mp4")


def test_temp_sibling_of_a_255_byte_name_fits(tmp_path: Path) -> None:
    target = tmp_path / ("e" * 251 + ".mp4")  # 255 bytes: the longest legal name
    tmp = temp_sibling(target)
    assert len(tmp.name.encode()) <= 255 and is_temp_name(tmp.name)
    tmp.write_bytes(b"")  # the file system takes it
