"""The log-mel front end, built only from `tf.signal` and core TF ops.

One implementation serves the tf.data readers, the normalisation statistics at
prepare time, and the exported SavedModel / TFLite graphs, which take raw
waveforms. Every function is batched and shape-polymorphic in batch and length,
and avoids ops without a TFLite builtin (hence `tf.expand_dims`, not `x[..., None]`,
and gathers instead of per-example Python control flow).

Pipeline (DESIGN.md): waveform [B, S] float32 in [-1, 1], 16 kHz
  -> STFT (25 ms Hann window, 10 ms hop) -> power -> mel (64 bands, 0-8 kHz)
  -> log(x + eps) -> trim leading/trailing silence -> crop/pad to T frames
  -> per-band normalisation -> [B, mels, T].

Silence trimming: leading and trailing silence carries no emotion, and in corpora
padded with digital silence it would otherwise fill the crop window and dominate
the band statistics. Frames more than `trim_db` below the clip's loudest frame, at
the start or end, are excluded from the crop and from the statistics.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from i2a_tf.config import FrontEndConfig

_DB_PER_NEPER = 10.0 / np.log(10.0)


class BandStatistics(NamedTuple):
    """Per-mel-band mean and standard deviation, each [mels] float32."""

    mean: np.ndarray
    std: np.ndarray


def mel_weight_matrix(config: FrontEndConfig) -> tf.Tensor:
    """[fft_length // 2 + 1, mels] float32 (HTK mel scale, triangular filters)."""
    return tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=config.num_mels,
        num_spectrogram_bins=config.fft_length // 2 + 1,
        sample_rate=config.sample_rate,
        lower_edge_hertz=config.fmin_hz,
        upper_edge_hertz=config.fmax_hz,
    )


def compact_mel_weights(config: FrontEndConfig) -> tuple[np.ndarray, np.ndarray]:
    """The mel matrix as per-band bin lists: (bins [mels, L] int32, weights
    [mels, L] float32), L = the widest band's bins.

    Each triangular filter covers a contiguous run of FFT bins, so
    `sum_j power[..., bins[m, j]] * weights[m, j]` is `power @ mel_weight_matrix`
    without the zeros: 64 x 20 numbers to store instead of 257 x 64 at the
    defaults (2.6 % of the entries), which is what keeps the int8 TFLite model
    small. Padding entries repeat a valid bin with weight 0.
    """
    with tf.init_scope():  # eager even inside a tf.function: a constant table
        dense = mel_weight_matrix(config).numpy()
    num_bins, num_mels = dense.shape
    starts = np.zeros(num_mels, np.int64)
    widths = np.ones(num_mels, np.int64)
    for band in range(num_mels):
        support = np.flatnonzero(dense[:, band])
        if support.size:
            starts[band] = support[0]
            widths[band] = support[-1] - support[0] + 1
    offsets = np.arange(widths.max())
    bins = np.minimum(starts[:, None] + offsets[None, :], num_bins - 1)
    inside = offsets[None, :] < widths[:, None]
    weights = np.where(inside, dense[bins, np.arange(num_mels)[:, None]], 0.0)
    return bins.astype(np.int32), weights.astype(np.float32)


def num_frames_for(num_samples: tf.Tensor, config: FrontEndConfig) -> tf.Tensor:
    """Frames whose window lies inside `num_samples` real samples (at least 1).

    num_samples: [B] integer. Returns [B] int32.
    """
    num_samples = tf.cast(num_samples, tf.int32)
    frames = 1 + (num_samples - config.frame_length) // config.frame_step
    return tf.maximum(frames, 1)


def log_mel(waveforms: tf.Tensor, config: FrontEndConfig,
            compact_mel: bool = False) -> tf.Tensor:
    """Unnormalised log-mel spectrogram.

    Args:
      waveforms: [B, S] float32 in [-1, 1], mono, `config.sample_rate`. Shorter
        than one window is zero-padded to one window.
      compact_mel: project onto the mel bands with `compact_mel_weights` (a
        gather and a sum; what the TFLite models use) instead of the dense
        matmul. Equal up to float rounding (~1e-7 relative).
    Returns:
      [B, frames, mels] float32, log(mel power + log_eps), frames = 1 + (S - W) // H.
    """
    waveforms = tf.convert_to_tensor(waveforms, tf.float32)
    shortfall = tf.maximum(config.frame_length - tf.shape(waveforms)[1], 0)
    waveforms = tf.pad(waveforms, [[0, 0], [0, shortfall]])
    spectrum = tf.signal.stft(
        waveforms,
        frame_length=config.frame_length,
        frame_step=config.frame_step,
        fft_length=config.fft_length,
        window_fn=tf.signal.hann_window,
        pad_end=False,
    )
    power = tf.math.square(tf.math.abs(spectrum))
    if compact_mel:
        bins, weights = compact_mel_weights(config)
        band_bins = tf.gather(power, tf.constant(bins), axis=2)  # [B, F, mels, L]
        mel_power = tf.reduce_sum(band_bins * tf.constant(weights), axis=-1)
    else:
        mel_power = tf.tensordot(power, mel_weight_matrix(config), axes=1)
    return tf.math.log(mel_power + config.log_eps)


def voiced_bounds(logmel: tf.Tensor, num_frames: tf.Tensor,
                  trim_db: float) -> tuple[tf.Tensor, tf.Tensor]:
    """First and last frame within `trim_db` of the loudest real frame.

    Args:
      logmel: [B, F, mels] float32 from `log_mel`; frames at or past `num_frames`
        are padding and never count as voiced.
      num_frames: [B] int, real frames per example (1 <= num_frames <= F).
      trim_db: threshold in dB below the loudest frame; 0 keeps every real frame.
    Returns:
      (start, end): [B] int32 each, inclusive, 0 <= start <= end < num_frames.
    """
    num_frames = tf.cast(num_frames, tf.int32)
    if trim_db <= 0:
        return tf.zeros_like(num_frames), num_frames - 1
    frame_ids = tf.range(tf.shape(logmel)[1])
    real = frame_ids[tf.newaxis, :] < num_frames[:, tf.newaxis]
    energy_db = _DB_PER_NEPER * tf.reduce_logsumexp(logmel, axis=-1)
    lowest = tf.fill(tf.shape(energy_db), tf.constant(-1e30, energy_db.dtype))
    energy_db = tf.where(real, energy_db, lowest)
    loudest = tf.reduce_max(energy_db, axis=1, keepdims=True)
    voiced = energy_db >= loudest - trim_db
    big = tf.fill(tf.shape(voiced), tf.shape(logmel)[1])
    start = tf.reduce_min(tf.where(voiced, frame_ids[tf.newaxis, :], big), axis=1)
    end = tf.reduce_max(tf.where(voiced, frame_ids[tf.newaxis, :], -1), axis=1)
    return start, end


def fixed_length(logmel: tf.Tensor, start: tf.Tensor, end: tf.Tensor,
                 config: FrontEndConfig,
                 crop_fraction: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Crops or pads the voiced frames [start, end] to `config.num_frames` frames.

    With L = end - start + 1 voiced frames and T = num_frames, the window starts
    `shift` frames after `start`, with shift in [min(0, L - T), max(0, L - T)]:
    centred (shift = floor((L - T) / 2)) when `crop_fraction` is None, else
    `floor(crop_fraction * (range + 1))` into that range (random crop / random
    placement in training). Frames outside [start, end] are filled per
    `config.pad_mode`: 'repeat' tiles the voiced frames, 'mean' marks them invalid
    so `normalise` sets them to the band mean (0).

    Args:
      logmel: [B, F, mels] float32.
      start, end: [B] int32 from `voiced_bounds`.
      crop_fraction: None, or [B] float32 in [0, 1).
    Returns:
      (window [B, T, mels] float32, valid [B, T] bool).
    """
    t = config.num_frames
    length = end - start + 1
    low = tf.minimum(0, length - t)
    high = tf.maximum(0, length - t)
    if crop_fraction is None:
        shift = tf.math.floordiv(length - t, 2)
    else:
        span = tf.cast(high - low + 1, tf.float32)
        shift = low + tf.minimum(
            tf.cast(tf.floor(crop_fraction * span), tf.int32), high - low)
    position = shift[:, tf.newaxis] + tf.range(t)[tf.newaxis, :]
    valid = tf.logical_and(position >= 0, position < length[:, tf.newaxis])
    frame_index = start[:, tf.newaxis] + tf.math.floormod(position, length[:, tf.newaxis])
    window = tf.gather(logmel, frame_index, batch_dims=1)
    if config.pad_mode == "repeat":
        valid = tf.ones_like(valid)
    return window, valid


def normalise(window: tf.Tensor, valid: tf.Tensor, statistics: BandStatistics,
              speaker: tuple[tf.Tensor, tf.Tensor] | None = None) -> tf.Tensor:
    """(window - mean) / std per band, 0 where not valid; transposed to [B, mels, T].

    window: [B, T, mels] float32; valid: [B, T] bool. `speaker`: None (every
    row uses `statistics`), or per-row (mean [B, mels], std [B, mels]) that
    replace them (speaker normalisation, `speaker_row_statistics`).
    Returns [B, mels, T] float32: with `statistics`, zero-mean unit-variance
    per band on the training split; with a speaker's, zero-mean (unit-variance
    under 'mean_std') per band over that speaker's voiced frames.
    """
    if speaker is None:
        mean = tf.constant(statistics.mean, tf.float32)
        std = tf.constant(statistics.std, tf.float32)
    else:
        mean = tf.expand_dims(tf.convert_to_tensor(speaker[0], tf.float32), 1)
        std = tf.expand_dims(tf.convert_to_tensor(speaker[1], tf.float32), 1)
    scaled = (window - mean) / std
    scaled = scaled * tf.expand_dims(tf.cast(valid, tf.float32), -1)
    return tf.transpose(scaled, [0, 2, 1])


def speaker_row_statistics(speaker_mean: tf.Tensor, speaker_std: tf.Tensor,
                           statistics: BandStatistics, mode: str
                           ) -> tuple[tf.Tensor, tf.Tensor] | None:
    """What `normalise` uses per row under `--speaker_normalisation=mode`.

    speaker_mean, speaker_std: [B, mels], each row's speaker's band statistics.
    'none' -> None (the training split's statistics); 'mean' -> (the speaker's
    means, the training split's std); 'mean_std' -> (the speaker's means and stds).
    """
    if mode == "none":
        return None
    if mode == "mean":
        std = tf.broadcast_to(tf.constant(statistics.std, tf.float32),
                              tf.shape(speaker_mean))
        return speaker_mean, std
    if mode == "mean_std":
        return speaker_mean, speaker_std
    raise ValueError(f"unknown speaker normalisation {mode!r}")


def logmel_features(logmel: tf.Tensor, num_frames: tf.Tensor,
                    statistics: BandStatistics, config: FrontEndConfig,
                    crop_fraction: tf.Tensor | None = None,
                    speaker: tuple[tf.Tensor, tf.Tensor] | None = None) -> tf.Tensor:
    """Unnormalised log-mel [B, F, mels] -> model input [B, mels, T] (normalised).

    `speaker`: see `normalise`."""
    start, end = voiced_bounds(logmel, num_frames, config.trim_db)
    window, valid = fixed_length(logmel, start, end, config, crop_fraction)
    return normalise(window, valid, statistics, speaker)


def waveform_features(waveforms: tf.Tensor, num_samples: tf.Tensor,
                      statistics: BandStatistics, config: FrontEndConfig,
                      crop_fraction: tf.Tensor | None = None,
                      compact_mel: bool = False,
                      speaker: tuple[tf.Tensor, tf.Tensor] | None = None) -> tf.Tensor:
    """The whole front end: waveforms [B, S] float32 in [-1, 1] -> [B, mels, T].

    num_samples: [B] int, real samples per row (rows may be zero-padded past it).
    This is the function the exported models wrap (`compact_mel`: see `log_mel`;
    `speaker`: see `normalise`).
    """
    logmel = log_mel(waveforms, config, compact_mel)
    return logmel_features(logmel, num_frames_for(num_samples, config), statistics,
                           config, crop_fraction, speaker)


def frame_moments(logmel: tf.Tensor, start: tf.Tensor, end: tf.Tensor,
                  centre: np.ndarray) -> tf.Tensor:
    """Per clip, the count, sum and sum of squares of its voiced frames,
    centred: logmel [B, F, mels], start/end [B] inclusive voiced bounds, centre
    [mels] -> [B, 1 + 2 * mels] float32 (frames, per-band sums of x - centre,
    per-band sums of (x - centre)^2).

    Centring on a typical band value (the training split's band means) keeps
    the squares small, so the variance E[d^2] - E[d]^2 does not cancel away in
    float32 for a band that hardly varies (one at the log floor: a level of
    -13.8 with a std of 0.003 would come out ~3x off uncentred).
    """
    frame_ids = tf.range(tf.shape(logmel)[1])[tf.newaxis, :]
    voiced = tf.logical_and(frame_ids >= start[:, tf.newaxis],
                            frame_ids <= end[:, tf.newaxis])
    weight = tf.expand_dims(tf.cast(voiced, tf.float32), -1)
    centred = (logmel - tf.cast(centre, tf.float32)) * weight
    count = tf.reduce_sum(weight, axis=[1, 2])
    return tf.concat([count[:, tf.newaxis], tf.reduce_sum(centred, axis=1),
                      tf.reduce_sum(tf.square(centred), axis=1)], axis=1)


def clip_band_moments(waveforms: tf.Tensor, num_samples: tf.Tensor,
                      config: FrontEndConfig, centre: np.ndarray) -> tf.Tensor:
    """`frame_moments` of each clip's voiced log-mel frames.

    waveforms [B, S] float32 in [-1, 1] (zero-padded past num_samples [B]);
    centre [mels] (a model's: its training band means). Moments add up: summed
    over a speaker's clips (in float64 where possible) they give the speaker's
    statistics (`statistics_from_moment_sums`, `moment_sums_statistics`); the
    input pipeline and the exported `speaker_moments` signature both use this.
    """
    logmel = log_mel(waveforms, config)
    start, end = voiced_bounds(logmel, num_frames_for(num_samples, config),
                               config.trim_db)
    return frame_moments(logmel, start, end, centre)


def moment_sums_statistics(moments: tf.Tensor, statistics: BandStatistics
                           ) -> tuple[tf.Tensor, tf.Tensor]:
    """[B, 1 + 2 * mels] summed moments centred on `statistics.mean` -> (mean,
    std) [B, mels] each, the rule of `statistics_from_moments` in the graph
    (std >= 1e-3). A row without frames (count < 1: no audio of the speaker,
    or zeros sent by mistake) gets `statistics` themselves."""
    mels = len(statistics.mean)
    count = moments[:, :1]
    known = count >= 1.0
    count = tf.maximum(count, 1.0)
    offset = moments[:, 1:1 + mels] / count
    variance = tf.maximum(moments[:, 1 + mels:] / count - tf.square(offset), 0.0)
    mean = tf.constant(statistics.mean, tf.float32) + offset
    std = tf.maximum(tf.sqrt(variance), 1e-3)
    shape = tf.shape(offset)
    return (tf.where(known, mean, tf.broadcast_to(
                tf.constant(statistics.mean, tf.float32), shape)),
            tf.where(known, std, tf.broadcast_to(
                tf.constant(statistics.std, tf.float32), shape)))


def statistics_from_moment_sums(moments: np.ndarray, centre: np.ndarray
                                ) -> BandStatistics:
    """[1 + 2 * mels] summed moments centred on `centre` [mels] -> BandStatistics."""
    moments = np.asarray(moments, np.float64)
    if moments[0] <= 0:
        raise ValueError("no frames to compute normalisation statistics from")
    mels = len(centre)
    offset = moments[1:1 + mels] / moments[0]
    return statistics_from_moments(np.asarray(centre, np.float64) + offset,
                                   moments[1 + mels:] / moments[0] - np.square(offset))


def moment_sums_of(statistics: BandStatistics, centre: np.ndarray) -> np.ndarray:
    """The `[1 + 2 * mels]` moment sums (centred on `centre`) of one
    frame-equivalent that give back `statistics`: (1, mean - centre,
    std^2 + (mean - centre)^2). A client that has a speaker's statistics
    rather than summed clip moments can send these."""
    offset = np.asarray(statistics.mean, np.float64) - np.asarray(centre, np.float64)
    return np.concatenate([[1.0], offset,
                           np.square(np.asarray(statistics.std, np.float64))
                           + np.square(offset)]).astype(np.float32)


class StatisticsAccumulator:
    """Per-band mean/std over the voiced frames of many clips (float64 sums)."""

    def __init__(self, num_mels: int):
        self._count = 0
        self._sum = np.zeros(num_mels, np.float64)
        self._sum_sq = np.zeros(num_mels, np.float64)

    def add(self, logmel: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        """logmel: [B, F, mels]; start, end: [B] inclusive voiced bounds."""
        for clip, first, last in zip(logmel, start, end):
            frames = np.asarray(clip[int(first):int(last) + 1], np.float64)
            self._count += frames.shape[0]
            self._sum += frames.sum(axis=0)
            self._sum_sq += np.square(frames).sum(axis=0)

    def result(self) -> BandStatistics:
        if self._count == 0:
            raise ValueError("no frames to compute normalisation statistics from")
        mean = self._sum / self._count
        return statistics_from_moments(mean, self._sum_sq / self._count - np.square(mean))


def statistics_from_moments(mean: np.ndarray, variance: np.ndarray) -> BandStatistics:
    """Per-band mean and (population) variance, each [mels] -> BandStatistics.

    The one place the standard deviation is derived, whichever runner computed
    the moments (the local accumulator or tf.Transform's tft.mean / tft.var).
    """
    variance = np.maximum(np.asarray(variance, np.float64), 0.0)
    # A band that never varies (e.g. above a corpus's bandwidth) must not
    # blow up to inf after division.
    std = np.maximum(np.sqrt(variance), 1e-3)
    return BandStatistics(np.asarray(mean, np.float64).astype(np.float32),
                          std.astype(np.float32))
