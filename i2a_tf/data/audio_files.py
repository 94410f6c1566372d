"""Decoding audio files to 16 kHz mono int16 (offline, at TFRecord-writing time).

`soundfile` reads any format libsndfile knows (WAV, FLAC, OGG, AIFF, MP3, ...);
channels are averaged to mono and `scipy.signal.resample_poly` converts the rate.
The same function serves the converters and the predict command, so a served clip
goes through exactly the decoding the training clips went through.
"""

from __future__ import annotations

import math
import os

import numpy as np
import scipy.signal
import soundfile

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")


class AudioReadError(ValueError):
    """A file could not be turned into a waveform; `reason` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """[frames, channels] or [frames] -> [frames] float64, channels averaged."""
    samples = np.asarray(samples, np.float64)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return samples


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """[samples] float at source_rate -> [samples'] float64 at target_rate."""
    if source_rate == target_rate:
        return np.asarray(waveform, np.float64)
    common = math.gcd(int(source_rate), int(target_rate))
    return scipy.signal.resample_poly(
        np.asarray(waveform, np.float64), target_rate // common, source_rate // common)


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """[samples] float in [-1, 1] -> int16; resampling overshoot is clipped."""
    scaled = np.round(np.asarray(waveform, np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def read_waveform(path: str, target_rate: int = 16000) -> np.ndarray:
    """Decodes `path` to [samples] int16, mono, `target_rate` Hz.

    Raises AudioReadError with a human-readable reason for an empty, unreadable or
    sample-less file.
    """
    try:
        if os.path.getsize(path) == 0:
            raise AudioReadError(path, "empty file: 0 bytes")
    except OSError as error:
        raise AudioReadError(path, f"unreadable: {error.strerror or error}") from error
    try:
        samples, rate = soundfile.read(path, dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioReadError(path, f"unreadable audio: {error}") from error
    if samples.shape[0] == 0:
        raise AudioReadError(path, "empty file: no audio samples")
    mono = to_mono_float(samples)
    if not np.all(np.isfinite(mono)):
        raise AudioReadError(path, "audio contains NaN or infinite samples")
    return to_int16(resample(mono, int(rate), target_rate))
