"""Log-mel spectrograms back to audio, so a person can listen to them.

The inverse of `frontend.log_mel` for listening, not for measurement: the mel
projection keeps 64 numbers of 257 per frame and the phase is gone, so the
waveform is an estimate whose *mel* spectrogram resembles the input. Pipeline:

  [mels, T] normalised log-mel -> undo the per-band normalisation -> exp - eps
  -> mel power [T, mels] -> pseudo-inverse of the mel matrix -> linear magnitude
  [T, fft_length // 2 + 1] -> fast Griffin-Lim -> waveform -> peak-normalise.

The STFT here is the forward front end's, parameter for parameter (periodic Hann
window, `frame_length`, `frame_step`, `fft_length`, no centring, no end padding),
and the inverse uses `tf.signal.inverse_stft_window_fn` of that same window, so
`stft(inverse_stft(X)) == X` for every X that is an STFT (away from the first and
last window, which no other frame overlaps).

Offline tooling: eager TF and NumPy, not meant for the exported graphs.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import soundfile
import tensorflow as tf

from i2a_tf.config import FrontEndConfig
from i2a_tf.data.frontend import BandStatistics, mel_weight_matrix

# Perraudin, Balazs & Soendergaard 2013, "A fast Griffin-Lim algorithm": the
# value the paper recommends (and librosa's default). Below 1 the iteration is
# stable; the same 60 iterations reach a clearly lower spectral inconsistency
# than classic Griffin-Lim (momentum 0), at the same cost per iteration.
_MOMENTUM = 0.99

_PEAK = 0.9
# Mel power below this fraction of `log_eps` is float32 rounding of a value that
# sat on the log floor (log(0 + eps) normalised and back is eps * (1 +- 1e-6)),
# i.e. silence: it becomes exactly 0 so that silence stays silence instead of
# being peak-normalised into full-scale noise.
_SILENT_FRACTION_OF_EPS = 1e-3
# A full-scale waveform gives log mel power below ~12 at the defaults. The clip
# only keeps exp() finite (float32 overflows past ~88) for generated
# spectrograms far outside the training range.
_MAX_LOG_MEL_POWER = 40.0


def mel_to_linear_magnitude(mel_power: tf.Tensor, config: FrontEndConfig) -> tf.Tensor:
    """Mel power spectrogram -> linear-frequency STFT magnitude (an estimate).

    `log_mel` computes `mel = power @ M` with M = `mel_weight_matrix(config)`
    ([bins, mels], full column rank at the defaults). This returns
    `sqrt(max(mel @ pinv(M), 0))`: the minimum-norm least-squares power spectrum,
    clipped at zero, as a magnitude. The approximation, knowingly:
      - detail inside one band is gone: each band's power is spread over its
        bins as a smooth bump, so a pure tone comes back as a band-wide peak
        (its frequency is known only to about a band's width) and harmonics
        closer than a band merge;
      - the unclipped solution reproduces `mel` exactly but rings negative
        between bands with very different power; clipping those bins to 0 makes
        the re-projection onto the mel bands close, not equal (a true
        non-negative least-squares fit would be iterative; not worth it for
        listening);
      - bins with no mel weight (DC, and anything outside [fmin, fmax]) come
        back as 0.

    Args:
      mel_power: [..., frames, mels] float32, linear mel power (>= 0), the
        `tensordot(power, M)` of `log_mel` before the log.
    Returns:
      [..., frames, fft_length // 2 + 1] float32 magnitude, >= 0.
    """
    mel_power = tf.convert_to_tensor(mel_power, tf.float32)
    # float64 for the SVD: cheap at 257 x 64 and free of float32 rounding in
    # the small singular values.
    inverse = tf.cast(tf.linalg.pinv(tf.cast(mel_weight_matrix(config), tf.float64)),
                      tf.float32)  # [mels, bins]
    power = tf.tensordot(mel_power, inverse, axes=1)
    return tf.math.sqrt(tf.maximum(power, 0.0))


def _stft_pair(config: FrontEndConfig):
    """(stft, inverse_stft) with exactly `frontend.log_mel`'s STFT parameters."""
    stft = functools.partial(
        tf.signal.stft,
        frame_length=config.frame_length,
        frame_step=config.frame_step,
        fft_length=config.fft_length,
        window_fn=tf.signal.hann_window,
        pad_end=False,
    )
    inverse_stft = functools.partial(
        tf.signal.inverse_stft,
        frame_length=config.frame_length,
        frame_step=config.frame_step,
        fft_length=config.fft_length,
        window_fn=tf.signal.inverse_stft_window_fn(
            config.frame_step, forward_window_fn=tf.signal.hann_window),
    )
    return stft, inverse_stft


def _unit_phase(spectrum: tf.Tensor) -> tf.Tensor:
    """spectrum / |spectrum| (complex64), 0 where the spectrum is 0 (no NaN)."""
    size = tf.math.abs(spectrum)
    safe = tf.where(size > 0, size, tf.ones_like(size))
    return spectrum / tf.cast(safe, spectrum.dtype)


def griffin_lim(magnitude: tf.Tensor, config: FrontEndConfig,
                iterations: int = 60, seed: int = 0) -> tf.Tensor:
    """A waveform whose STFT magnitude approximates `magnitude` (fast Griffin-Lim).

    Griffin & Lim (1984) alternate between imposing the target magnitude and
    projecting onto consistent spectrograms (STFTs of some signal:
    `stft(inverse_stft(.))`). The fast variant (Perraudin et al. 2013) adds
    momentum: with c_n the n-th consistent estimate,
    t_n = c_n + 0.99 (c_n - c_{n-1}), and the next step takes t_n's phase.
    Chosen over the classic algorithm because it converges markedly faster for
    the same cost per iteration, so the default 60 iterations are enough.

    The initial phase is uniform in [0, 2 pi), drawn with a stateless RNG from
    `seed`, so the output depends only on the arguments.

    Args:
      magnitude: [frames, fft_length // 2 + 1] float32, >= 0, a linear STFT
        magnitude on `frontend.log_mel`'s frame grid.
      iterations: Griffin-Lim iterations (>= 0; 0 returns the random-phase
        inversion).
      seed: int, seed of the initial phase.
    Returns:
      [(frames - 1) * frame_step + frame_length] float32 waveform, at the level
      the magnitude implies (not normalised). The first and last few ms are
      tapered: only one window covers them.
    """
    magnitude = tf.convert_to_tensor(magnitude, tf.float32)
    bins = config.fft_length // 2 + 1
    if magnitude.shape.rank != 2 or magnitude.shape[-1] not in (None, bins):
        raise ValueError(f"magnitude must be [frames, {bins}], got {magnitude.shape}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    stft, inverse_stft = _stft_pair(config)
    target = tf.complex(magnitude, tf.zeros_like(magnitude))
    phase = tf.random.stateless_uniform(tf.shape(magnitude), seed=[seed, 0],
                                        maxval=2.0 * math.pi)
    angles = tf.exp(tf.complex(tf.zeros_like(phase), phase))
    previous = tf.zeros_like(target)  # c_0 = 0: the first step is plain Griffin-Lim
    for _ in range(iterations):
        consistent = stft(inverse_stft(target * angles))
        angles = _unit_phase(consistent + _MOMENTUM * (consistent - previous))
        previous = consistent
    return inverse_stft(target * angles)


def logmel_to_waveform(logmel: np.ndarray, statistics: BandStatistics,
                       config: FrontEndConfig, iterations: int = 60) -> np.ndarray:
    """The classifier's input spectrogram -> a listenable waveform.

    Args:
      logmel: [mels, T] float32, normalised log-mel as the models see it:
        (log(mel power + log_eps) - mean) / std per band, bands first.
      statistics: the `BandStatistics` ([mels] mean and std) it was normalised with.
      iterations: Griffin-Lim iterations.
    Returns:
      [(T - 1) * frame_step + frame_length] float32 in [-1, 1], peak-normalised
      to 0.9 (only the shape of the spectrogram is kept, not its level). An
      input on the log floor (silence) gives exactly 0. Deterministic.
    Raises:
      ValueError: wrong shape, or non-finite values.
    """
    logmel = np.asarray(logmel, np.float64)
    mean = np.asarray(statistics.mean, np.float64)
    std = np.asarray(statistics.std, np.float64)
    if logmel.ndim != 2 or logmel.shape[0] != config.num_mels:
        raise ValueError(f"logmel must be [{config.num_mels}, T], got {logmel.shape}")
    if mean.shape != (config.num_mels,) or std.shape != (config.num_mels,):
        raise ValueError(f"statistics must be [{config.num_mels}] each, got "
                         f"{mean.shape} and {std.shape}")
    if not np.all(np.isfinite(logmel)):
        raise ValueError("logmel has non-finite values")
    log_power = logmel * std[:, None] + mean[:, None]
    mel_power = np.exp(np.minimum(log_power, _MAX_LOG_MEL_POWER)) - config.log_eps
    mel_power = np.where(mel_power > _SILENT_FRACTION_OF_EPS * config.log_eps,
                         mel_power, 0.0)
    magnitude = mel_to_linear_magnitude(mel_power.T.astype(np.float32), config)
    waveform = griffin_lim(magnitude, config, iterations).numpy()
    peak = float(np.max(np.abs(waveform)))
    if peak > 0.0:
        waveform = waveform * np.float32(_PEAK / peak)
    return waveform.astype(np.float32)


def write_wav(path: str, waveform: np.ndarray, sample_rate: int) -> None:
    """Writes a 16-bit PCM WAV file, creating its folder.

    waveform: [samples] float in [-1, 1]; values outside are clipped (libsndfile
    would otherwise wrap them around when converting to int16).
    """
    waveform = np.asarray(waveform, np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be [samples], got {waveform.shape}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    soundfile.write(path, np.clip(waveform, -1.0, 1.0), sample_rate, subtype="PCM_16")
