"""The log-mel front end against an independent NumPy reference, and the
trim / crop / pad / normalise arithmetic on hand-checked cases."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import tone
from i2a_tf.config import FrontEndConfig
from i2a_tf.data import frontend

CONFIG = FrontEndConfig()


def _hz_to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def reference_log_mel(waveform, config=CONFIG):
    """NumPy/SciPy reference: framed periodic-Hann rFFT power, HTK triangles."""
    import scipy.signal
    n, hop, nfft = config.frame_length, config.frame_step, config.fft_length
    frames = 1 + (len(waveform) - n) // hop
    window = scipy.signal.get_window("hann", n, fftbins=True)
    framed = np.stack([waveform[i * hop:i * hop + n] for i in range(frames)]) * window
    power = np.abs(np.fft.rfft(framed, n=nfft)) ** 2
    bins = np.linspace(0, config.sample_rate / 2, nfft // 2 + 1)
    edges = np.linspace(_hz_to_mel(config.fmin_hz), _hz_to_mel(config.fmax_hz),
                        config.num_mels + 2)
    mel = _hz_to_mel(bins)[:, None]
    lower = (mel - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - mel) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights[0] = 0.0  # the DC bin carries no mel weight
    return np.log(power @ weights + config.log_eps)


def test_log_mel_matches_numpy_reference():
    waveform = tone(0.5, freq=310.0, amplitude=0.4).astype(np.float32)
    ours = frontend.log_mel(waveform[None], CONFIG).numpy()[0]
    reference = reference_log_mel(waveform.astype(np.float64))
    assert ours.shape == reference.shape == (1 + (8000 - 400) // 160, 64)
    loud = reference > -8  # compare where float32 rounding is not the story
    assert loud.mean() > 0.5
    np.testing.assert_allclose(ours[loud], reference[loud], atol=2e-3, rtol=0)


def test_log_mel_pads_clips_shorter_than_one_window():
    out = frontend.log_mel(np.zeros((2, 100), np.float32), CONFIG)
    assert out.shape == (2, 1, 64)
    np.testing.assert_allclose(out.numpy(), np.log(CONFIG.log_eps), rtol=1e-6)


def test_num_frames_for():
    got = frontend.num_frames_for(tf.constant([400, 559, 560, 16000, 10]), CONFIG)
    assert got.numpy().tolist() == [1, 1, 2, 98, 1]


def test_voiced_bounds_trims_leading_and_trailing_silence():
    # 0.3 s silence, 0.5 s tone, 0.3 s silence: voiced frames start near frame 30.
    waveform = tone(0.5, silence_s=0.3).astype(np.float32)
    logmel = frontend.log_mel(waveform[None], CONFIG)
    num_frames = frontend.num_frames_for([len(waveform)], CONFIG)
    start, end = frontend.voiced_bounds(logmel, num_frames, trim_db=40.0)
    # A frame is voiced once its 400-sample window reaches the tone at 4800.
    assert 27 <= int(start[0]) <= 30
    assert 77 <= int(end[0]) <= 80
    start, end = frontend.voiced_bounds(logmel, num_frames, trim_db=0.0)
    assert (int(start[0]), int(end[0])) == (0, int(num_frames[0]) - 1)


def test_voiced_bounds_ignores_padding_frames():
    loud = np.ones((1, 10, 4), np.float32)
    start, end = frontend.voiced_bounds(tf.constant(loud), tf.constant([6]), 40.0)
    assert (int(start[0]), int(end[0])) == (0, 5)


def _frames(n, mels=2):
    """[1, n, mels] log-mel whose value is the frame number, for index checks."""
    return tf.constant(np.repeat(np.arange(n, dtype=np.float32)[None, :, None], mels, 2))


@pytest.mark.parametrize("pad_mode", ["repeat", "mean"])
def test_fixed_length_centre_crop_of_long_clip(pad_mode):
    config = FrontEndConfig(num_frames=4, pad_mode=pad_mode)
    # voiced frames 2..11 (L = 10), T = 4: centred shift (10 - 4) // 2 = 3 -> 5..8
    window, valid = frontend.fixed_length(_frames(14), tf.constant([2]),
                                          tf.constant([11]), config)
    assert window.numpy()[0, :, 0].tolist() == [5, 6, 7, 8]
    assert valid.numpy().all()


def test_fixed_length_pads_short_clip():
    # voiced frames 3..5 (L = 3), T = 7: shift floor((3 - 7) / 2) = -2.
    repeat, valid = frontend.fixed_length(
        _frames(9), tf.constant([3]), tf.constant([5]),
        FrontEndConfig(num_frames=7, pad_mode="repeat"))
    assert repeat.numpy()[0, :, 0].tolist() == [4, 5, 3, 4, 5, 3, 4]
    assert valid.numpy().all()
    _, valid = frontend.fixed_length(
        _frames(9), tf.constant([3]), tf.constant([5]),
        FrontEndConfig(num_frames=7, pad_mode="mean"))
    assert valid.numpy()[0].tolist() == [False, False, True, True, True, False, False]


def test_fixed_length_random_crop_covers_range():
    config = FrontEndConfig(num_frames=4)
    fractions = tf.constant([0.0, 0.999, 0.5], tf.float32)
    logmel = tf.concat([_frames(14)] * 3, axis=0)
    window, _ = frontend.fixed_length(logmel, tf.constant([2, 2, 2]),
                                      tf.constant([11, 11, 11]), config, fractions)
    # shift in [0, 6]: fraction 0 -> 0, 0.999 -> 6, 0.5 -> floor(3.5) = 3
    assert window.numpy()[:, 0, 0].tolist() == [2, 8, 5]


def test_normalise_transposes_and_zeroes_invalid_frames():
    window = tf.constant([[[1.0, 10.0], [3.0, 30.0]]])  # [1, T=2, mels=2]
    stats = frontend.BandStatistics(np.array([1.0, 10.0], np.float32),
                                    np.array([2.0, 10.0], np.float32))
    out = frontend.normalise(window, tf.constant([[True, False]]), stats).numpy()
    assert out.shape == (1, 2, 2)
    np.testing.assert_allclose(out[0], [[0.0, 0.0], [0.0, 0.0]])
    out = frontend.normalise(window, tf.constant([[True, True]]), stats).numpy()
    np.testing.assert_allclose(out[0], [[0.0, 1.0], [0.0, 2.0]])


def test_statistics_accumulator_matches_numpy_over_voiced_frames():
    rng = np.random.default_rng(0)
    logmel = rng.normal(size=(3, 10, 4))
    start, end = np.array([0, 2, 5]), np.array([9, 4, 5])
    accumulator = frontend.StatisticsAccumulator(4)
    accumulator.add(logmel, start, end)
    stats = accumulator.result()
    frames = np.concatenate([logmel[0], logmel[1, 2:5], logmel[2, 5:6]])
    np.testing.assert_allclose(stats.mean, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, frames.std(0), rtol=1e-5)


def test_waveform_features_shape_and_padding_independence():
    stats = frontend.BandStatistics(np.zeros(64, np.float32), np.ones(64, np.float32))
    config = FrontEndConfig(num_frames=30)
    clip = tone(0.4, silence_s=0.05).astype(np.float32)
    alone = frontend.waveform_features(clip[None], [len(clip)], stats, config)
    padded = np.concatenate([clip, np.zeros(5000, np.float32)])[None]
    in_batch = frontend.waveform_features(padded, [len(clip)], stats, config)
    assert alone.shape == (1, 64, 30)
    # Zero padding added by batching must not change the features.
    np.testing.assert_allclose(alone.numpy(), in_batch.numpy(), atol=1e-5)


def test_compact_mel_projection_equals_the_dense_matmul():
    """The TFLite graphs' 64 x L gather table computes power @ mel_matrix."""
    bins, weights = frontend.compact_mel_weights(CONFIG)
    dense = frontend.mel_weight_matrix(CONFIG).numpy()
    assert bins.shape == weights.shape == (64, 20)
    rebuilt = np.zeros_like(dense)
    for band in range(64):
        np.add.at(rebuilt[:, band], bins[band], weights[band])
    np.testing.assert_array_equal(rebuilt, dense)
    clip = tone(0.5, silence_s=0.05).astype(np.float32)[None]
    np.testing.assert_allclose(frontend.log_mel(clip, CONFIG, compact_mel=True).numpy(),
                               frontend.log_mel(clip, CONFIG).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_front_end_converts_to_tflite_with_builtin_ops_only():
    """The exported models will carry this front end: it must need no Select TF
    ops (the LiteRT runtime cannot run them)."""
    stats = frontend.BandStatistics(np.zeros(64, np.float32), np.ones(64, np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 16000], tf.float32)])
    def features(waveforms):
        num_samples = tf.fill([tf.shape(waveforms)[0]], tf.shape(waveforms)[1])
        return frontend.waveform_features(waveforms, num_samples, stats, CONFIG)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [features.get_concrete_function()], features)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    assert len(converter.convert()) > 0  # raises on any op without a builtin


def test_clip_band_moments_sum_to_the_statistics_of_the_pooled_voiced_frames():
    clips = [tone(0.6, freq=f, silence_s=0.1) for f in (150, 260, 410)]
    longest = max(len(c) for c in clips)
    batch = np.stack([np.pad(c, (0, longest - len(c))) for c in clips]).astype(np.float32)
    lengths = [len(c) for c in clips]
    centre = np.linspace(-8.0, -2.0, CONFIG.num_mels).astype(np.float32)
    moments = frontend.clip_band_moments(batch, lengths, CONFIG, centre).numpy()
    assert moments.shape == (3, 1 + 2 * CONFIG.num_mels)
    pooled = []
    for clip in clips:  # each clip on its own, unpadded
        logmel = frontend.log_mel(clip[None].astype(np.float32), CONFIG)
        count = frontend.num_frames_for([len(clip)], CONFIG)
        start, end = frontend.voiced_bounds(logmel, count, CONFIG.trim_db)
        pooled.append(logmel.numpy()[0, int(start[0]):int(end[0]) + 1])
    frames = np.concatenate(pooled).astype(np.float64)
    total = moments.astype(np.float64).sum(0)
    assert total[0] == len(frames)
    statistics = frontend.statistics_from_moment_sums(total, centre)
    np.testing.assert_allclose(statistics.mean, frames.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(statistics.std, frames.std(0), rtol=1e-3, atol=1e-3)
    # The graph version (what the served model runs) agrees, and so does the
    # one-frame-equivalent a client may send instead of summed moments.
    band = frontend.BandStatistics(centre, np.ones_like(centre))
    mean, std = frontend.moment_sums_statistics(tf.constant(total[None], tf.float32), band)
    np.testing.assert_allclose(mean.numpy()[0], statistics.mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(std.numpy()[0], statistics.std, rtol=1e-3, atol=1e-3)
    again = frontend.statistics_from_moment_sums(
        frontend.moment_sums_of(statistics, centre), centre)
    np.testing.assert_allclose(again.mean, statistics.mean, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(again.std, statistics.std, rtol=1e-3, atol=1e-3)


def test_centred_moments_keep_a_nearly_constant_band_in_float32():
    """A band at the log floor (-13.8, std 0.003) over 20,000 frames: summed in
    float32 per clip and across clips, as a client may, its std survives when
    the moments are centred on the training band mean (uncentred, E[x^2] -
    E[x]^2 cancels in float32 and gives ~3x the std)."""
    rng = np.random.default_rng(0)
    frames = (-13.8 + 0.003 * rng.standard_normal((100, 200, 1))).astype(np.float32)
    start, end = tf.zeros([100], tf.int32), tf.fill([100], 199)
    band = frontend.BandStatistics(np.array([-13.79], np.float32),
                                   np.array([1.0], np.float32))
    rows = frontend.frame_moments(frames, start, end, band.mean).numpy()
    running = np.zeros(3, np.float32)
    for row in rows:
        running += row  # float32 client-side running sum
    _, std = frontend.moment_sums_statistics(tf.constant(running[None]), band)
    truth = frames.astype(np.float64).std()
    assert abs(float(std[0, 0]) - truth) < 0.1 * truth
    rows = frontend.frame_moments(frames, start, end, np.zeros(1, np.float32)).numpy()
    running = rows.sum(0, dtype=np.float32)
    _, uncentred = frontend.moment_sums_statistics(
        tf.constant(running[None]), frontend.BandStatistics(np.zeros(1, np.float32),
                                                            band.std))
    assert abs(float(uncentred[0, 0]) - truth) > 0.1 * truth  # why centring


def test_moments_without_frames_fall_back_to_the_training_statistics():
    band = frontend.BandStatistics(np.array([-5.0, -6.0], np.float32),
                                   np.array([2.0, 3.0], np.float32))
    rows = tf.constant([[0.0, 0.0, 0.0, 0.0, 0.0], [4.0, 4.0, -4.0, 8.0, 8.0]])
    mean, std = frontend.moment_sums_statistics(rows, band)
    np.testing.assert_allclose(mean.numpy(), [[-5.0, -6.0], [-4.0, -7.0]])
    # Row 2: offsets (1, -1), E[d^2] = 2 -> variance 2 - 1 = 1 per band.
    np.testing.assert_allclose(std.numpy(), [[2.0, 3.0], [1.0, 1.0]])


def test_speaker_row_statistics_per_mode():
    band = frontend.BandStatistics(np.array([1.0, 2.0], np.float32),
                                   np.array([3.0, 4.0], np.float32))
    mean = tf.constant([[5.0, 6.0], [7.0, 8.0]])
    std = tf.constant([[0.5, 0.25], [2.0, 1.0]])
    assert frontend.speaker_row_statistics(mean, std, band, "none") is None
    m, s = frontend.speaker_row_statistics(mean, std, band, "mean")
    np.testing.assert_array_equal(m.numpy(), mean.numpy())
    np.testing.assert_array_equal(s.numpy(), [[3.0, 4.0], [3.0, 4.0]])
    m, s = frontend.speaker_row_statistics(mean, std, band, "mean_std")
    np.testing.assert_array_equal(s.numpy(), std.numpy())
    # normalise: row r, band b, frame t -> (x - m[r, b]) / s[r, b].
    window = tf.fill([2, 3, 2], 9.0)
    out = frontend.normalise(window, tf.ones([2, 3], tf.bool), band, (m, s)).numpy()
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out[:, :, 0], [[8.0, 12.0], [1.0, 1.0]])
