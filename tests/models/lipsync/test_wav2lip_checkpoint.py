from __future__ import annotations

import hashlib

import pytest
import torch

from talkfactory.errors import CheckpointError, PermanentError
from talkfactory.models.lipsync.wav2lip.checkpoint import file_sha256, load_state_dict, open_onnx
from talkfactory.models.lipsync.wav2lip.engine import load_model
from tests.fixtures.lipsync import checkpoint_file, random_state_dict, save_checkpoint


def test_public_format_with_module_prefix_and_bare_state_dict_load_the_same_tensors():
    wrapped, sha_w = load_state_dict(checkpoint_file("wrapped-module"))
    bare, sha_b = load_state_dict(checkpoint_file("bare"))
    assert set(wrapped) == set(bare)
    assert not any(k.startswith("module.") for k in wrapped)
    key = "face_decoder_blocks.1.0.conv_block.0.weight"
    assert torch.equal(wrapped[key], bare[key])
    assert sha_w != sha_b  # different files, different model versions
    assert sha_w == hashlib.sha256(checkpoint_file("wrapped-module").read_bytes()).hexdigest()


def test_bare_state_dict_with_module_prefix_loads(tmp_path):
    path = save_checkpoint(tmp_path / "p.pth", random_state_dict(1), wrapped=False, module_prefix=True)
    state, _ = load_state_dict(path)
    assert "output_block.1.weight" in state


def test_legacy_serialisation_with_optimizer_state_loads(tmp_path):
    path = save_checkpoint(tmp_path / "old.pth", random_state_dict(2), module_prefix=True, legacy=True)
    state, sha = load_state_dict(path)
    assert len(state) == 352 and sha == hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_tensor_with_wrong_shape_is_named_with_both_shapes(tmp_path):
    state = random_state_dict(0)
    key = "face_decoder_blocks.3.0.conv_block.0.weight"
    state[key] = torch.zeros(768, 380, 3, 3)
    path = save_checkpoint(tmp_path / "bad.pth", state, module_prefix=True)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    msg = str(info.value)
    assert key in msg
    assert "(768, 380, 3, 3)" in msg and "(768, 384, 3, 3)" in msg
    assert "1 tensor(s) with the wrong shape" in msg
    assert str(path) in msg and info.value.subject == str(path)
    assert isinstance(info.value, PermanentError)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = random_state_dict(0)
    del state["audio_encoder.3.conv_block.1.running_mean"]
    state["extra_head.weight"] = torch.zeros(3)
    del state["audio_encoder.4.conv_block.1.num_batches_tracked"]  # optional: tolerated
    path = save_checkpoint(tmp_path / "keys.pth", state)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    msg = str(info.value)
    assert "1 missing tensor(s): audio_encoder.3.conv_block.1.running_mean" in msg
    assert "1 unexpected tensor(s): extra_head.weight" in msg
    assert "num_batches_tracked" not in msg


def test_truncated_checkpoint_names_the_file(tmp_path):
    data = checkpoint_file("wrapped-module").read_bytes()
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as info:
        load_model(path, device="cpu")
    assert str(path) in str(info.value)
    assert "cannot read checkpoint" in str(info.value)


def test_garbage_empty_missing_and_wrong_object(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 100)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    for path, words in [
        (garbage, "cannot read checkpoint"),
        (empty, "empty"),
        (tmp_path / "nope.pth", "does not exist"),
        (listing, "not a Wav2Lip checkpoint"),
    ]:
        with pytest.raises(CheckpointError) as info:
            load_state_dict(path)
        assert str(path) in str(info.value) and words in str(info.value), str(info.value)


def test_non_finite_weights_are_rejected(tmp_path):
    state = random_state_dict(0)
    state["output_block.1.bias"][1] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pth", state)
    with pytest.raises(CheckpointError, match="output_block.1.bias"):
        load_state_dict(path)


def test_garbage_onnx_names_the_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(CheckpointError) as info:
        open_onnx(path, device="cpu")
    assert str(path) in str(info.value)


def test_sha256_is_cached_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == hashlib.sha256(b"abc").hexdigest()
    path.write_bytes(b"abcd")  # size changes: hashed again
    assert file_sha256(path) == hashlib.sha256(b"abcd").hexdigest()
