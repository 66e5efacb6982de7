from __future__ import annotations

import torch

from talkfactory.models.lipsync.wav2lip.network import Wav2LipNetwork, fold_batchnorm, reference_shapes
from tests.fixtures.lipsync import random_state_dict

# Facts about the published generator's state_dict (Rudrabha/Wav2Lip models/wav2lip.py + conv.py):
# ConvTranspose2d weights are (in, out, k, k); the output block ends in a bare 1x1 Conv2d.
PUBLISHED_SHAPES = {
    "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
    "face_encoder_blocks.2.3.conv_block.1.running_var": (64,),
    "face_encoder_blocks.6.1.conv_block.0.weight": (512, 512, 1, 1),
    "audio_encoder.0.conv_block.0.weight": (32, 1, 3, 3),
    "audio_encoder.10.conv_block.0.weight": (256, 256, 3, 3),
    "audio_encoder.12.conv_block.0.weight": (512, 512, 1, 1),
    "face_decoder_blocks.0.0.conv_block.0.weight": (512, 512, 1, 1),
    "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),
    "face_decoder_blocks.3.0.conv_block.0.weight": (768, 384, 3, 3),
    "face_decoder_blocks.6.2.conv_block.1.num_batches_tracked": (),
    "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
    "output_block.1.weight": (3, 32, 1, 1),
    "output_block.1.bias": (3,),
}


def test_state_dict_layout_matches_published_generator():
    shapes = reference_shapes()
    for key, shape in PUBLISHED_SHAPES.items():
        assert shapes[key] == shape, key
    assert len(shapes) == 352
    assert {k.split(".")[0] for k in shapes} == {
        "face_encoder_blocks",
        "audio_encoder",
        "face_decoder_blocks",
        "output_block",
    }
    # 36.3 M parameters: x3 with Adam's two moments is the released ~436 MB checkpoint.
    params = sum(p.numel() for p in Wav2LipNetwork().parameters())
    assert params == 36_298_035


def test_forward_shapes_and_range():
    net = Wav2LipNetwork().eval()
    with torch.inference_mode():
        out = net(torch.rand(2, 1, 80, 16) * 8 - 4, torch.rand(2, 6, 96, 96))
    assert out.shape == (2, 3, 96, 96)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_folded_batchnorm_matches_eval_network():
    net = Wav2LipNetwork()
    net.load_state_dict(random_state_dict(3))
    net.eval()
    folded = fold_batchnorm(net)
    audio, face = torch.rand(3, 1, 80, 16) * 8 - 4, torch.rand(3, 6, 96, 96)
    with torch.inference_mode():
        a, b = net(audio, face), folded(audio, face)
    assert float((a - b).abs().max()) < 1e-5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
