"""Griffin-Lim inversion (i2a_tf.data.inversion): a tone comes back at its
frequency, an STFT magnitude is matched closely, silence stays silent."""

import numpy as np
import pytest
import soundfile

from i2a_tf.config import FrontEndConfig
from i2a_tf.data import inversion
from i2a_tf.data.frontend import BandStatistics, log_mel

CONFIG = FrontEndConfig()


def _tone(frequency: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * CONFIG.sample_rate)) / CONFIG.sample_rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _peak_frequency(waveform: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1.0 / CONFIG.sample_rate)[np.argmax(spectrum)])


def _mel_band_width_at(frequency: float) -> float:
    """Width (Hz) between neighbouring mel band centres around `frequency`."""
    mel = 1127.0 * np.log1p(frequency / 700.0)
    top = 1127.0 * np.log1p(CONFIG.fmax_hz / 700.0)
    step = (top - 1127.0 * np.log1p(CONFIG.fmin_hz / 700.0)) / (CONFIG.num_mels + 1)
    return float(700.0 * (np.expm1((mel + step) / 1127.0) - np.expm1(mel / 1127.0)))


@pytest.mark.parametrize("frequency", [440.0, 1000.0, 2500.0])
def test_tone_through_log_mel_and_back_keeps_its_frequency(frequency):
    logmel = log_mel(_tone(frequency)[None], CONFIG).numpy()[0].T  # [mels, T]
    identity = BandStatistics(mean=np.zeros(CONFIG.num_mels, np.float32),
                              std=np.ones(CONFIG.num_mels, np.float32))
    waveform = inversion.logmel_to_waveform(logmel, identity, CONFIG, iterations=30)
    assert waveform.dtype == np.float32
    assert len(waveform) == (logmel.shape[1] - 1) * CONFIG.frame_step + CONFIG.frame_length
    assert np.max(np.abs(waveform)) == pytest.approx(0.9, abs=1e-6)
    # Within one mel band: the mel projection keeps no finer frequency detail.
    assert abs(_peak_frequency(waveform) - frequency) <= _mel_band_width_at(frequency)


def test_normalised_input_is_undone_with_its_statistics():
    logmel = log_mel(_tone(1000.0)[None], CONFIG).numpy()[0].T
    mean = logmel.mean(axis=1)
    std = logmel.std(axis=1) + 1.0
    normalised = (logmel - mean[:, None]) / std[:, None]
    plain = inversion.logmel_to_waveform(
        logmel, BandStatistics(np.zeros_like(mean), np.ones_like(std)), CONFIG, 10)
    undone = inversion.logmel_to_waveform(normalised, BandStatistics(mean, std), CONFIG, 10)
    np.testing.assert_allclose(undone, plain, atol=2e-3)


def test_griffin_lim_matches_a_consistent_magnitude():
    """Target = |STFT| of a real two-tone signal: the estimate's STFT magnitude
    lands far closer to it than a random-phase inversion does."""
    import tensorflow as tf
    signal = _tone(300.0, 0.5) + _tone(1700.0, 0.5)
    stft, _ = inversion._stft_pair(CONFIG)
    target = tf.abs(stft(signal))

    def error(iterations):
        estimate = inversion.griffin_lim(target, CONFIG, iterations=iterations)
        got = tf.abs(stft(estimate))[2:-2]  # edges: one window only
        return float(tf.norm(got - target[2:-2]) / tf.norm(target[2:-2]))

    assert error(40) < 0.5 * error(0)
    assert error(40) < 0.15


def test_silence_stays_silent_and_bad_inputs_are_named(tmp_path):
    floor = np.full((CONFIG.num_mels, 20), np.log(CONFIG.log_eps), np.float32)
    identity = BandStatistics(np.zeros(CONFIG.num_mels, np.float32),
                              np.ones(CONFIG.num_mels, np.float32))
    silent = inversion.logmel_to_waveform(floor, identity, CONFIG, iterations=5)
    assert not np.any(silent)
    with pytest.raises(ValueError, match="logmel must be"):
        inversion.logmel_to_waveform(floor[:10], identity, CONFIG)
    with pytest.raises(ValueError, match="non-finite"):
        bad = floor.copy()
        bad[0, 0] = np.nan
        inversion.logmel_to_waveform(bad, identity, CONFIG)
    with pytest.raises(ValueError, match="iterations"):
        inversion.griffin_lim(np.zeros((4, CONFIG.fft_length // 2 + 1), np.float32),
                              CONFIG, iterations=-1)
    path = tmp_path / "sub" / "x.wav"
    inversion.write_wav(str(path), np.array([0.0, 2.0, -2.0], np.float32), CONFIG.sample_rate)
    data, rate = soundfile.read(str(path))
    assert rate == CONFIG.sample_rate
    np.testing.assert_allclose(data, [0.0, 1.0, -1.0], atol=1e-4)
