"""Channel presets: the package file, the user's overrides (TOML and YAML), and clear errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.pipeline.exports.channels import (
    LIMIT_FIELDS,
    MASTER,
    ChannelSpec,
    describe_channels,
    load_channels,
)

PRESETS = [
    "master",
    "youtube",
    "youtube-shorts",
    "tiktok",
    "douyin",
    "instagram-reels",
    "bilibili",
    "x",
    "linkedin",
    "wechat-channels",
    "youtube-live",
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(message: str) -> int:
    match = re.search(r"line (\d+)", message)
    assert match is not None, message
    return int(match.group(1))


def test_presets_load_with_their_shapes():
    registry = load_channels()
    assert registry.names() == PRESETS
    assert registry.spec_version == "2026-12-05.1"
    master = registry.get(MASTER)
    assert master.native_size and master.spec_version == "2026-12-05.1/master.v1"
    sizes = {name: (registry.get(name).width, registry.get(name).height) for name in PRESETS[1:]}
    assert sizes["youtube"] == (1920, 1080) and sizes["bilibili"] == (1920, 1080)
    for vertical in ("youtube-shorts", "tiktok", "douyin", "instagram-reels"):
        assert sizes[vertical] == (1080, 1920)
    assert sizes["x"] == (1280, 720) and sizes["linkedin"] == (1080, 1080)
    assert registry.get("youtube-shorts").max_duration_s == 180
    for spec in registry.all():
        assert spec.loudness_lufs == -14.0 and spec.true_peak_db == -1.0
        assert spec.kind == ("rtmp" if spec.name == "youtube-live" else "file")
        assert spec.audio_rate == 48000 and spec.audio_channels == 2


def test_every_limit_has_a_source_or_is_marked_unverified():
    for spec in load_channels().all():
        if spec.name == MASTER:
            continue
        for field in LIMIT_FIELDS:
            if getattr(spec, field) is None:
                continue
            assert field in spec.sources or field in spec.unverified, f"{spec.name}.{field} has no source"
        for field, source in spec.sources.items():
            assert source.startswith("https://"), f"{spec.name}.{field}: {source}"
            if "third-party" in source:
                assert field in spec.unverified, (
                    f"{spec.name}.{field} cites a third party but is not unverified"
                )


def test_wechat_is_plainly_unverified():
    wechat = load_channels().get("wechat-channels")
    assert "unverified" in wechat.description.lower()
    set_limits = [f for f in LIMIT_FIELDS if getattr(wechat, f) is not None]
    assert sorted(wechat.unverified) == sorted(set_limits)


def test_unknown_channel_lists_the_known_ones():
    with pytest.raises(ConfigurationError) as err:
        load_channels().get("myspace")
    assert (
        "'myspace'" in str(err.value)
        and "youtube-shorts" in str(err.value)
        and "wechat-channels" in str(err.value)
    )


def test_user_toml_overrides_field_by_field_and_adds_a_derived_channel(tmp_path):
    user = write(
        tmp_path,
        "mine.toml",
        """
[channels.youtube]
max_duration_s = 600
loudness_lufs = -16.0

[channels.vertical-quiet]
extends = "youtube-shorts"
description = "Shorts at -16"
loudness_lufs = -16
""",
    )
    registry = load_channels(user)
    preset = load_channels().get("youtube")
    youtube = registry.get("youtube")
    assert youtube.max_duration_s == 600 and youtube.loudness_lufs == -16.0
    assert (youtube.width, youtube.height, youtube.video_maxrate_kbps) == (
        1920,
        1080,
        preset.video_maxrate_kbps,
    )
    assert youtube.overridden == ("loudness_lufs", "max_duration_s")
    assert "max_duration_s" not in youtube.sources and "width" in youtube.sources
    assert youtube.spec_version.startswith("2026-12-05.1/youtube.v1+user.")
    derived = registry.get("vertical-quiet")
    assert (derived.width, derived.height, derived.max_duration_s) == (1080, 1920, 180)
    assert derived.loudness_lufs == -16 and derived.description == "Shorts at -16"
    assert "max_duration_s" in derived.sources  # inherited with its source
    assert registry.get("tiktok") == load_channels().get("tiktok")  # untouched presets stay as they are
    assert registry.names()[-1] == "vertical-quiet"
    assert len({youtube, preset, derived, registry.get("youtube")}) == 3  # usable as keys


def test_user_yaml_works_the_same(tmp_path):
    user = write(
        tmp_path,
        "mine.yaml",
        """
channels:
  youtube:
    max_duration_s: 600
  square-x:
    extends: x
    width: 720
    height: 720
""",
    )
    registry = load_channels(user)
    assert registry.get("youtube").max_duration_s == 600
    square = registry.get("square-x")
    assert (square.width, square.height, square.max_duration_s) == (720, 720, 1200)
    assert "width" not in square.sources and square.overridden == ("height", "width")


def test_editing_the_user_file_changes_the_version_and_reloads(tmp_path):
    user = write(tmp_path, "mine.toml", "[channels.tiktok]\nmax_duration_s = 180\n")
    first = load_channels(user)
    assert load_channels(user) is first  # cached
    user.write_text("[channels.tiktok]\nmax_duration_s = 300\n", encoding="utf-8")
    stat = user.stat()
    os.utime(user, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_channels(user)
    assert second.get("tiktok").max_duration_s == 300
    assert second.get("tiktok").spec_version != first.get("tiktok").spec_version


def test_corrupt_toml_names_the_file_and_line(tmp_path):
    user = write(tmp_path, "broken.toml", "[channels.youtube]\nmax_duration_s = 600\nloudness_lufs = = -16\n")
    with pytest.raises(ConfigurationError) as err:
        load_channels(user)
    message = str(err.value)
    assert str(user) in message and line_of(message) == 3 and "TOML" in message


def test_corrupt_yaml_names_the_file_and_line(tmp_path):
    user = write(tmp_path, "broken.yaml", "channels:\n  youtube:\n    max_duration_s: 600\n   bad: [\n")
    with pytest.raises(ConfigurationError) as err:
        load_channels(user)
    assert str(user) in str(err.value) and line_of(str(err.value)) in (4, 5)


def test_bad_field_value_names_file_channel_field_and_line(tmp_path):
    user = write(
        tmp_path,
        "bad.toml",
        """# my channels
[channels.tiktok]
description = "fine"

[channels.mine]
extends = "youtube"
width = 1080
max_duration_s = -5
""",
    )
    with pytest.raises(ConfigurationError) as err:
        load_channels(user)
    message = str(err.value)
    assert str(user) in message and "'mine'" in message and "max_duration_s" in message and "-5" in message
    assert line_of(message) == 8


def test_bad_field_in_yaml_names_its_line(tmp_path):
    user = write(tmp_path, "bad.yaml", "channels:\n  tiktok:\n    width: 1081\n    height: 1920\n")
    with pytest.raises(ConfigurationError) as err:
        load_channels(user)
    message = str(err.value)
    assert str(user) in message and "'tiktok'" in message and "even" in message and line_of(message) == 3


def test_unknown_field_is_refused_at_its_line(tmp_path):
    user = write(tmp_path, "typo.toml", "[channels.x]\n\nmax_duraton_s = 60\n")
    with pytest.raises(ConfigurationError) as err:
        load_channels(user)
    assert "max_duraton_s" in str(err.value) and line_of(str(err.value)) == 3


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ('[channels.a]\nextends = "nope"\n', "unknown channel 'nope'"),
        ('[channels.a]\nextends = "b"\n[channels.b]\nextends = "a"\n', "loops"),
        ('[channels."../etc"]\nwidth = 2\n', "names a folder"),
        ('spec_version = "mine"\n', "unknown top-level key 'spec_version'"),
        ('[channels.a]\nrtmp_url = "rtmp://x/app"\n', 'kind = "rtmp"'),
    ],
)
def test_other_mistakes_are_clear(tmp_path, text, expect):
    user = write(tmp_path, "m.toml", text)
    with pytest.raises(ConfigurationError) as err:
        load_channels(user)
    assert expect in str(err.value) and str(user) in str(err.value) and "line " in str(err.value)


def test_missing_or_wrong_suffix_user_file(tmp_path):
    with pytest.raises(ConfigurationError, match="not found"):
        load_channels(tmp_path / "none.toml")
    with pytest.raises(ConfigurationError, match=".toml, .yaml or .yml"):
        load_channels(write(tmp_path, "c.json", "{}"))


def test_rtmp_kind_is_reserved_and_keys_are_references(tmp_path):
    ok = write(
        tmp_path,
        "live.toml",
        '[channels.yt-live]\nkind = "rtmp"\nwidth = 1280\nheight = 720\nrtmp_url = "rtmp://a.rtmp.youtube.com/live2"\n'
        'rtmp_key = "env:YT_KEY"\n',
    )
    live = load_channels(ok).get("yt-live")
    assert live.kind == "rtmp" and live.rtmp_key == "env:YT_KEY"
    bad = write(tmp_path, "leak.toml", ok.read_text().replace("env:YT_KEY", "abcd-efgh-ijkl"))
    with pytest.raises(ConfigurationError, match="never the key itself") as err:
        load_channels(bad)
    assert line_of(str(err.value)) == 6 and "abcd-efgh-ijkl" not in str(err.value)


def test_spec_checks_its_own_consistency():
    with pytest.raises(ValueError, match="together"):
        ChannelSpec(name="a", spec_version="v", width=640)
    with pytest.raises(ValueError, match="above"):
        ChannelSpec(name="a", spec_version="v", min_duration_s=10, max_duration_s=5)
    with pytest.raises(ValueError, match="unknown fields"):
        ChannelSpec(name="a", spec_version="v", sources={"widht": "https://x"})


def test_encode_options_follow_the_channel():
    shorts = load_channels().get("youtube-shorts")
    opts = shorts.encode_options(30, audio_filters=("volume=2.00dB",))
    assert opts.gop_frames == 15  # YouTube: a closed GOP of half the frame rate
    assert (
        opts.maxrate_kbps == 12000
        and opts.audio_bitrate_kbps == 384
        and opts.audio_filters == ("volume=2.00dB",)
    )
    assert load_channels().get("tiktok").encode_options(25).gop_frames == 50


def test_describe_channels_rows():
    rows = {row["name"]: row for row in describe_channels(load_channels())}
    assert list(rows) == PRESETS
    assert rows["master"]["size"] == "native" and rows["master"]["length"] == "-"
    assert rows["youtube-shorts"]["size"] == "1080x1920" and rows["youtube-shorts"]["length"] == "0:00-3:00"
    assert rows["youtube"]["length"] == "0:00-12:00:00"
    assert rows["instagram-reels"]["length"] == "0:03-15:00"
    assert rows["tiktok"]["loudness"] == "-14 LUFS, -1 dBTP" and rows["tiktok"]["bitrate_cap"] == "10 Mb/s"
    assert (
        "max_bytes" in rows["wechat-channels"]["unverified"] and rows["youtube-shorts"]["unverified"] != "-"
    )
