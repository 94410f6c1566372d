"""What `prepare` wrote: dataset.json, its record files and its statistics.

Readers (the input pipelines now, the exported models later) load the dataset
through `DatasetInfo`, which also checks that the run's configuration still
matches what the records were prepared with, so changed flags fail with a message
instead of silently normalising with the wrong statistics.
"""

from __future__ import annotations

import json
import os

import numpy as np

from i2a_tf.config import Config, ConfigError
from i2a_tf.data.frontend import BandStatistics

# Bump when the records or dataset.json change meaning.
CONVERTER_VERSION = 1
AUDIO_SPLITS = ("train_labeled", "train_unlabeled", "val", "test")
FACE_SPLIT = "faces"
DATASET_JSON = "dataset.json"
SKIPPED_JSON = "skipped.json"

# Front-end settings baked into the records and statistics at prepare time;
# the others (num_frames, pad_mode) only shape how records are read.
PREPARED_FRONTEND_FIELDS = ("sample_rate", "window_ms", "hop_ms", "num_mels",
                            "fmin_hz", "fmax_hz", "log_eps", "trim_db")


def load_dataset_json(data_dir: str) -> dict:
    """Reads dataset.json written by `prepare`; a clear error if absent or stale."""
    path = os.path.join(data_dir, DATASET_JSON)
    if not os.path.isfile(path):
        raise ConfigError(f"--workdir: {path} not found; run --mode=prepare first")
    with open(path, encoding="utf-8") as handle:
        info = json.load(handle)
    if info.get("converter_version") != CONVERTER_VERSION:
        raise ConfigError(
            f"--workdir: {path} was written by converter version "
            f"{info.get('converter_version')}, this is {CONVERTER_VERSION}; "
            "re-run --mode=prepare")
    return info


def band_statistics(info: dict) -> BandStatistics:
    """The normalisation statistics stored in dataset.json."""
    norm = info["normalisation"]
    return BandStatistics(np.asarray(norm["mean"], np.float32),
                          np.asarray(norm["std"], np.float32))


class DatasetInfo:
    """dataset.json of `config.data_dir`, checked against `config`."""

    def __init__(self, config: Config):
        self.data_dir = config.data_dir
        self.info = load_dataset_json(self.data_dir)
        where = os.path.join(self.data_dir, DATASET_JSON)
        prepared = self.info["frontend"]
        for name in PREPARED_FRONTEND_FIELDS:
            value = getattr(config.frontend, name)
            if prepared[name] != value:
                raise ConfigError(
                    f"--{name}={value}: the records in {where} were prepared with "
                    f"{name}={prepared[name]}; use that value or re-run --mode=prepare")
        if tuple(self.info["classes"]) != tuple(config.data.classes):
            raise ConfigError(
                f"--classes={','.join(config.data.classes)}: the records in {where} "
                f"were prepared with {','.join(self.info['classes'])}; use those or "
                "re-run --mode=prepare")
        self.classes = tuple(self.info["classes"])
        self.statistics = band_statistics(self.info)

    def num_examples(self, split: str) -> int:
        return int(self.info["splits"][split]["num_examples"])

    @property
    def face_size(self) -> int:
        return int(self.info["splits"][FACE_SPLIT]["image_size"])

    def files(self, split: str, kind: str) -> list[str]:
        """Record files of `split`; kind is 'audio', 'logmel' or 'faces'."""
        key = {"audio": "audio_files", "logmel": "logmel_files",
               "faces": "face_files"}[kind]
        entry = self.info["splits"][split]
        if key not in entry:
            raise ConfigError(
                f"--use_precomputed_logmel: split '{split}' has no {kind} records in "
                f"{self.data_dir}; re-run --mode=prepare with --precompute_logmel")
        return [os.path.join(self.data_dir, name) for name in entry[key]]
