"""The reference baseline: logistic regression on log-mel statistics.

Each clip becomes the per-band mean and standard deviation of its voiced
(silence-trimmed) log-mel frames and its voiced duration, computed with the
project's own front end (under `--speaker_normalisation`, normalised by the
clip's speaker's band statistics, as the network's input is); a standardised
logistic regression is fitted on the labeled clips. The study scores it on a
prepared cell's records (`logreg_metrics`); `tools/baseline_logreg.py` on its
own EmoDB split loop.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from i2a_tf.config import Config, ConfigError, FrontEndConfig
from i2a_tf.data import frontend
from i2a_tf.data.dataset_info import DatasetInfo
from i2a_tf.data.frontend import BandStatistics
from i2a_tf.data.pipeline import speaker_statistics, split_clips
from i2a_tf.models.evaluation import classification_metrics


def clip_statistics(waveform: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """`[samples]` float32 in [-1, 1] -> `[2 * mels + 1]` float32: mean and std
    of the voiced log-mel frames, and the voiced duration in seconds.

    Trimming removes the silence whose share of a fixed-length clip otherwise
    carries the utterance's duration (sad speech is slow), so the duration is
    given back as a feature.
    """
    signal = tf.constant(np.asarray(waveform, np.float32)[np.newaxis])
    logmel = frontend.log_mel(signal, config)
    count = frontend.num_frames_for([signal.shape[1]], config)
    start, end = frontend.voiced_bounds(logmel, count, config.trim_db)
    voiced = logmel.numpy()[0, int(start[0]):int(end[0]) + 1]
    duration_s = voiced.shape[0] * config.hop_ms / 1000.0
    return np.concatenate([voiced.mean(axis=0), voiced.std(axis=0),
                           [duration_s]]).astype(np.float32)


def fit_predict(train_features: np.ndarray, train_labels: np.ndarray,
                test_features: np.ndarray) -> np.ndarray:
    """Standardise on the training rows, fit a logistic regression, predict.

    train_features `[N, F]`, train_labels `[N]` int class ids, test_features
    `[M, F]` -> `[M]` int predicted class ids.
    """
    scaler = StandardScaler().fit(train_features)
    model = LogisticRegression(max_iter=5000).fit(
        scaler.transform(train_features), train_labels)
    return model.predict(scaler.transform(test_features))


def speaker_normalised(features: np.ndarray, statistics: BandStatistics,
                       mode: str) -> np.ndarray:
    """`clip_statistics` features of one clip `[2 * mels + 1]` as if its
    log-mel frames had been normalised by its speaker's band `statistics`
    (`--speaker_normalisation` mode): 'mean' subtracts the speaker's means
    from the clip's band means; 'mean_std' also divides means and stds by the
    speaker's stds (the standardising scaler makes a global std irrelevant)."""
    if mode == "none":
        return features
    mels = len(statistics.mean)
    out = np.array(features, np.float32)
    out[:mels] -= statistics.mean
    if mode == "mean_std":
        out[:2 * mels] /= np.concatenate([statistics.std, statistics.std])
    return out


def _split_features(data: DatasetInfo, split: str, config: FrontEndConfig
                    ) -> tuple[np.ndarray, np.ndarray]:
    clips = split_clips(data, split)
    speakers = (speaker_statistics(data, config)
                if config.speaker_normalisation != "none" else {})
    features = np.stack([speaker_normalised(
        clip_statistics(c["waveform"], config),
        speakers[c["speaker"]] if speakers else None,
        config.speaker_normalisation) for c in clips])
    return features, np.asarray([c["true_label"] for c in clips])


def logreg_metrics(config: Config) -> dict:
    """Fits on `<workdir>/data`'s train_labeled clips and scores the test
    clips: `classification_metrics` (uar, wa, macro_f1, ...), plus `val_uar`
    on the validation clips when there are any (a development study compares
    on it)."""
    data = DatasetInfo(config)
    for split in ("train_labeled", "test"):
        if not data.num_examples(split):
            raise ConfigError(f"--workdir={config.workdir}: the {split} split of "
                              f"{data.data_dir} is empty")
    train_x, train_y = _split_features(data, "train_labeled", config.frontend)

    def predict(split):
        features, labels = _split_features(data, split, config.frontend)
        if len(np.unique(train_y)) < 2:
            # One labeled class: every clip is that class (what the fit would say).
            return labels, np.full(len(labels), train_y[0])
        return labels, fit_predict(train_x, train_y, features)

    metrics = classification_metrics(*predict("test"), data.classes)
    if data.num_examples("val"):
        metrics["val_uar"] = classification_metrics(*predict("val"), data.classes)["uar"]
    return metrics
