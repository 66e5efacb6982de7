from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from talkfactory.errors import ConfigurationError
from talkfactory.models.speech.denoise import DENOISERS, denoise, denoiser_version, make_denoiser
from tests.fixtures.speech import RATE, SENTENCES_A, mix_at_snr, monologue, pink_noise, si_sdr, white_noise

ODD_CHUNKS = [1, 479, 481, 4799, 12345, 7, 30001]


@pytest.fixture(scope="module")
def scene():
    return monologue(SENTENCES_A[:2], lead=0.5, pause=0.6, tail=0.5)


def _chunked(name: str, x: np.ndarray, rate: int) -> np.ndarray:
    d = make_denoiser(name, sample_rate=rate)
    parts, i = [], 0
    for n in ODD_CHUNKS:
        parts.append(d.process(x[i : i + n]))
        i += n
    parts.append(d.process(x[i:]))
    parts.append(d.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize("name", DENOISERS)
@pytest.mark.parametrize("rate", [48000, 16000])
def test_chunked_equals_whole_and_keeps_length(scene, name: str, rate: int) -> None:
    x = mix_at_snr(scene.clean, white_noise(scene.clean.size), 5.0, scene.speech)
    if rate != RATE:
        import soxr

        x = np.asarray(soxr.resample(x, RATE, rate), dtype=np.float32)
    whole = denoise(x, rate, name)
    chunked = _chunked(name, x, rate)
    assert whole.shape == x.shape == chunked.shape
    # no clicks at joins: the chunked stream is the same signal
    assert float(np.abs(whole - chunked).max()) < 1e-4


@pytest.mark.parametrize("name", ["dfn3", "rnnoise"])
def test_output_is_aligned_with_input(scene, name: str) -> None:
    x = mix_at_snr(scene.clean, white_noise(scene.clean.size), 10.0, scene.speech)
    y = denoise(x, RATE, name)
    corr = scipy.signal.correlate(y, scene.clean, mode="full", method="fft")
    lag = int(np.argmax(corr)) - (scene.clean.size - 1)
    assert abs(lag) <= 1


@pytest.mark.parametrize("noise", [white_noise, pink_noise])
def test_dfn3_gains_at_least_5_db_si_sdr_at_0_db_snr(scene, noise) -> None:
    noisy = mix_at_snr(scene.clean, noise(scene.clean.size, seed=3), 0.0, scene.speech)
    before = si_sdr(noisy, scene.clean)
    after = si_sdr(denoise(noisy, RATE, "dfn3"), scene.clean)
    print(f"dfn3 {noise.__name__}: SI-SDR {before:.2f} -> {after:.2f} dB (+{after - before:.2f})")
    assert after - before >= 5.0


def test_rnnoise_improves_si_sdr_too(scene) -> None:
    noisy = mix_at_snr(scene.clean, white_noise(scene.clean.size, seed=4), 0.0, scene.speech)
    gain = si_sdr(denoise(noisy, RATE, "rnnoise"), scene.clean) - si_sdr(noisy, scene.clean)
    print(f"rnnoise white: +{gain:.2f} dB")
    assert gain >= 3.0


def test_noise_only_is_pulled_down_hard() -> None:
    x = 0.05 * white_noise(3 * 48000)
    y = denoise(x, 48000, "dfn3")
    assert 10 * np.log10(np.mean(y[48000:] ** 2)) < 10 * np.log10(np.mean(x**2)) - 30


def test_clipped_input_does_not_crash(scene) -> None:
    x = np.clip(scene.clean * 8.0, -1.0, 1.0)
    for name in DENOISERS:
        y = denoise(x, RATE, name)
        assert y.shape == x.shape and np.isfinite(y).all()


def test_empty_stream_flushes_to_nothing() -> None:
    d = make_denoiser("dfn3")
    assert d.process(np.zeros(0, np.float32)).size == 0
    assert d.flush().size == 0


def test_versions_name_package_and_model_hash() -> None:
    assert "DeepFilterNet3" in denoiser_version("dfn3") and "sha256:" in denoiser_version("dfn3")
    assert denoiser_version("rnnoise").startswith("pyrnnoise ") and "sha256:" in denoiser_version("rnnoise")
    assert make_denoiser("dfn3").version == denoiser_version("dfn3")
    assert denoiser_version("none") == "none"


def test_unknown_denoiser_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        make_denoiser("magic")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dfn3", "rnnoise"])
def test_block_parallel_matches_a_continuous_pass(scene, name: str) -> None:
    import soxr

    clean = np.asarray(soxr.resample(np.tile(scene.clean, 3), RATE, 48000), dtype=np.float32)
    x = clean + 0.02 * white_noise(clean.size, seed=6)
    sequential = denoise(x, 48000, name)

    def parallel(chunks: list[int]) -> np.ndarray:
        d = make_denoiser(name, workers=2, block_seconds=4.0)
        parts, i = [], 0
        for n in chunks:
            parts.append(d.process(x[i : i + n]))
            i += n
        parts += [d.process(x[i:]), d.flush()]
        d.close()  # type: ignore[attr-defined]
        return np.concatenate(parts)

    a = parallel([48000 * 5, 7, 48000 * 3 + 1])
    b = parallel([1000, 123457])
    assert a.shape == x.shape
    # blocks sit at fixed positions, so chunking never changes the output
    np.testing.assert_array_equal(a, b)
    # each block restarts the network after a warm-up: the same speech, a whisper of difference
    assert si_sdr(a, sequential) > 35.0
    assert si_sdr(a, clean) > si_sdr(x, clean) + 5.0
