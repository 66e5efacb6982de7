"""The Wav2Lip generator (Prajwal et al. 2020, "A Lip Sync Expert Is All You Need"), our implementation.

The layer layout, and so every ``state_dict`` key and shape, follows the published generator, so
``wav2lip.pth`` and ``wav2lip_gan.pth`` load into it unchanged. Inputs follow the published
inference code:

* ``audio``: (N, 1, 80, 16) normalised mel windows (see ``mel.py``);
* ``face``: (N, 6, 96, 96) in [0, 1], BGR; channels 0-2 are the face crop with its lower half
  zeroed, channels 3-5 the reference crop (the same frame at inference time);
* output: (N, 3, 96, 96) BGR in [0, 1] (a sigmoid).

The face encoder keeps each stage's output; the decoder starts from the 512-d audio embedding and
concatenates the matching encoder output after every stage (U-Net style skips).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

IMG_SIZE = 96
MEL_BANDS = 80
MEL_WINDOW = 16

_Pair = int | tuple[int, int]


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm + ReLU; with ``residual`` the block's input is added before the ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: _Pair, padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return self.act(y)  # type: ignore[no-any-return]


class UpBlock(nn.Module):
    """ConvTranspose2d + BatchNorm + ReLU (the decoder's upsampling step)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))  # type: ignore[no-any-return]


def _residuals(channels: int, count: int) -> list[nn.Module]:
    return [ConvBlock(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


@dataclass(frozen=True)
class _Down:
    cin: int
    cout: int
    kernel: int
    stride: _Pair
    padding: int
    residuals: int


# Face encoder: 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1 (the last stage is a 3x3 valid conv plus a 1x1).
_FACE_STAGES = (
    _Down(6, 16, 7, 1, 3, 0),
    _Down(16, 32, 3, 2, 1, 2),
    _Down(32, 64, 3, 2, 1, 3),
    _Down(64, 128, 3, 2, 1, 2),
    _Down(128, 256, 3, 2, 1, 2),
    _Down(256, 512, 3, 2, 1, 1),
)
# Audio encoder over an 80 x 16 mel window: 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1.
_AUDIO_STAGES = (
    _Down(1, 32, 3, 1, 1, 2),
    _Down(32, 64, 3, (3, 1), 1, 2),
    _Down(64, 128, 3, 3, 1, 2),
    _Down(128, 256, 3, (3, 2), 1, 1),
)
# Decoder stages after the 1x1 stem: (input channels incl. skip, output channels, stride, residuals).
_UP_STAGES = (
    (1024, 512, 1, 1),  # 1 -> 3 (3x3 kernel, no padding)
    (1024, 512, 2, 2),  # 3 -> 6
    (768, 384, 2, 2),  # 6 -> 12
    (512, 256, 2, 2),  # 12 -> 24
    (320, 128, 2, 2),  # 24 -> 48
    (160, 64, 2, 2),  # 48 -> 96
)


class Wav2LipNetwork(nn.Module):
    """The generator; ``forward(audio, face)`` keeps the published argument order."""

    def __init__(self) -> None:
        super().__init__()
        face: list[nn.Module] = []
        for s in _FACE_STAGES:
            face.append(
                nn.Sequential(
                    ConvBlock(s.cin, s.cout, s.kernel, s.stride, s.padding), *_residuals(s.cout, s.residuals)
                )
            )
        face.append(nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)))
        self.face_encoder_blocks = nn.ModuleList(face)

        audio: list[nn.Module] = []
        for s in _AUDIO_STAGES:
            audio.append(ConvBlock(s.cin, s.cout, s.kernel, s.stride, s.padding))
            audio.extend(_residuals(s.cout, s.residuals))
        audio.extend([ConvBlock(256, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)])
        self.audio_encoder = nn.Sequential(*audio)

        decoder: list[nn.Module] = [nn.Sequential(ConvBlock(512, 512, 1, 1, 0))]
        for cin, cout, stride, residuals in _UP_STAGES:
            up = (
                UpBlock(cin, cout, 3, 1, 0)
                if stride == 1
                else UpBlock(cin, cout, 3, stride, 1, output_padding=1)
            )
            decoder.append(nn.Sequential(up, *_residuals(cout, residuals)))
        self.face_decoder_blocks = nn.ModuleList(decoder)

        self.output_block = nn.Sequential(
            ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
        )

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(audio)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)  # type: ignore[no-any-return]


def fold_batchnorm(net: Wav2LipNetwork, *, max_weight: float = 1e4) -> nn.Module:
    """A copy of ``net`` for inference with every BatchNorm folded into the convolution before it.

    Halves the kernel launches and memory passes per block; the output matches the unfolded
    network in eval mode. A block whose folded weights would exceed ``max_weight`` (a tiny
    running variance) is left unfolded so an fp16 copy cannot overflow.
    """
    fused = copy.deepcopy(net).eval()
    for module in fused.modules():
        if not isinstance(module, ConvBlock | UpBlock):
            continue
        conv, bn = module.conv_block[0], module.conv_block[1]
        assert isinstance(bn, nn.BatchNorm2d)
        if isinstance(conv, nn.ConvTranspose2d):
            folded: nn.Module = fuse_conv_bn_eval(conv, bn, transpose=True)
        else:
            assert isinstance(conv, nn.Conv2d)
            folded = fuse_conv_bn_eval(conv, bn)
        weight = folded.weight
        assert isinstance(weight, torch.Tensor)
        folded.requires_grad_(False)
        if bool(torch.isfinite(weight).all()) and float(weight.detach().abs().max()) <= max_weight:
            module.conv_block = nn.Sequential(folded)
    return fused


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """Every ``state_dict`` key of the network with its shape: what a checkpoint must provide."""
    with torch.device("meta"):  # shapes only: no memory, no random init
        net = Wav2LipNetwork()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}
