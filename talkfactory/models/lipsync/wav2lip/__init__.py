"""Wav2Lip: a lip-sync backend that loads the public Wav2Lip checkpoints (or ONNX exports of them)."""

from __future__ import annotations

from talkfactory.models.lipsync.wav2lip.backend import (
    CODE_VERSION,
    RenderStats,
    Wav2LipBackend,
    Wav2LipPrepared,
)
from talkfactory.models.lipsync.wav2lip.onnx_export import ExportReport, export_onnx

__all__ = ["CODE_VERSION", "ExportReport", "RenderStats", "Wav2LipBackend", "Wav2LipPrepared", "export_onnx"]
