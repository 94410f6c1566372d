"""`--mode=predict`: audio files in, one JSON line per file out.

`python -m i2a_tf.main --mode=predict --model=<model> a.wav b.flac ...`

<model> is a SavedModel version folder, a TF Serving base folder (its highest
version) or a `.tflite` file written by `--mode=export`; by default the highest
version under `<export_dir>/<model_name>`.

Each file is decoded with soundfile (any format it reads, any sample rate, any
channel count: channels are averaged, the rate is converted with
`resample_poly`, exactly as the training clips were). A clip up to one model
window long (`window_samples`, 2.015 s at the defaults) is classified whole, as
evaluation does (the model trims leading and trailing silence and centres its
window on the voice). A longer file is cut into windows of that length with 50 %
overlap, the last one ending at the file's end; windows whose RMS level is more
than `trim_db` below the file's loudest window are silence and skipped, and the
probabilities of the others are averaged.

A model trained with `--speaker_normalisation` normalises each clip by its
speaker's log-mel statistics: the files of one predict call are taken to be
one speaker's clips, and their summed `speaker_moments` (every readable file)
normalise each of them; the lines then say how many files that was
("speaker_files"). Run one call per speaker.

Output lines (stdout):
  {"path": ..., "class": "anger", "probabilities": {"anger": 0.71, ...},
   "seconds": 2.1, "windows": 2}
  {"path": ..., "error": "unreadable audio: ..."}     (the others still run;
                                                       also for a clip shorter
                                                       than one STFT window)
"""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

import numpy as np
import tensorflow as tf

from i2a_tf.config import Config, ConfigError, FrontEndConfig
from i2a_tf.data import frontend
from i2a_tf.data.audio_files import AudioReadError, read_waveform
from i2a_tf.export import tflite
from i2a_tf.export.serving import (CLIENT_JSON, SPEAKER_INPUT, WAVEFORM_SIGNATURE,
                                   existing_versions, window_samples)

# Windows per forward pass: bounds memory on long files (an hour is 3,600 windows).
WINDOW_BATCH = 32


class SavedModelClassifier:
    """An exported SavedModel's `serving_default` over batches of windows."""

    def __init__(self, directory: str):
        metadata_path = os.path.join(directory, "assets", CLIENT_JSON)
        if not os.path.isfile(metadata_path):
            raise ConfigError(f"--model={directory}: no assets/{CLIENT_JSON}; not a "
                              "SavedModel written by --mode=export")
        with open(metadata_path, encoding="utf-8") as f:
            self.metadata = json.load(f)
        # Keep the loaded object: a signature alone does not keep its variables alive.
        self._loaded = tf.saved_model.load(directory)
        self._serve = self._loaded.signatures[WAVEFORM_SIGNATURE]

    def probabilities(self, windows: np.ndarray,
                      speaker_moments: np.ndarray | None = None) -> np.ndarray:
        """[K, samples] float32 -> [K, C], WINDOW_BATCH windows at a time;
        `speaker_moments` [1 + 2 * mels] for a speaker-normalised model."""
        out = []
        for i in range(0, len(windows), WINDOW_BATCH):
            batch = windows[i:i + WINDOW_BATCH]
            extra = {} if speaker_moments is None else {SPEAKER_INPUT: tf.constant(
                np.tile(speaker_moments[None], [len(batch), 1]))}
            out.append(self._serve(waveform=tf.constant(batch), **extra)
                       ["probabilities"].numpy())
        return np.concatenate(out)


class TFLiteClassifier:
    """An exported `.tflite` model run by LiteRT, one window at a time."""

    def __init__(self, path: str):
        try:
            with open(path, "rb") as f:
                model = f.read()
        except OSError as error:
            raise ConfigError(f"--model={path}: unreadable: {error.strerror}") from error
        try:
            self.metadata = tflite.read_metadata(model)
        except Exception as error:  # a flatbuffer parser error names no type
            raise ConfigError(f"--model={path}: not a TFLite model ({error})") from error
        if self.metadata is None:
            raise ConfigError(f"--model={path}: no embedded {CLIENT_JSON}; not a "
                              "TFLite model written by --mode=export")
        self._model = tflite.LiteModel(model, name=f"--model={path}")

    def probabilities(self, windows: np.ndarray,
                      speaker_moments: np.ndarray | None = None) -> np.ndarray:
        extra = [] if speaker_moments is None else [speaker_moments]
        return np.stack([self._model.probabilities(w, *extra) for w in windows])


def resolve_model(config: Config) -> str:
    """--model, or the highest exported version under the configured base."""
    path = config.export.model
    if not path:
        versions = existing_versions(config.saved_model_base)
        if not versions:
            raise ConfigError(
                f"--model: not given, and there is no exported version under "
                f"{config.saved_model_base}; run --mode=export or pass --model")
        return os.path.join(config.saved_model_base, str(versions[-1]))
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return path
        versions = existing_versions(path)
        if versions:
            return os.path.join(path, str(versions[-1]))
    raise ConfigError(f"--model={path}: not a SavedModel folder, a TF Serving base "
                      "folder with integer versions, or a .tflite file")


def load_classifier(path: str):
    if os.path.isfile(path):
        return TFLiteClassifier(path)
    return SavedModelClassifier(path)


def windows(waveform: np.ndarray, window: int, trim_db: float) -> np.ndarray:
    """[samples] -> [K, window or samples] float32 (see the module docstring)."""
    waveform = np.asarray(waveform, np.float32)
    if len(waveform) <= window:
        return waveform[None, :]
    hop = window // 2
    starts = list(range(0, len(waveform) - window + 1, hop))
    if starts[-1] != len(waveform) - window:
        starts.append(len(waveform) - window)
    cuts = np.stack([waveform[s:s + window] for s in starts])
    if trim_db > 0:
        rms = np.sqrt(np.mean(np.square(cuts, dtype=np.float64), axis=1))
        level_db = 20.0 * np.log10(np.maximum(rms, 1e-10))
        cuts = cuts[level_db >= level_db.max() - trim_db]
    return cuts


def _front_end(metadata: dict) -> FrontEndConfig:
    return FrontEndConfig(**metadata["frontend"])


def _read(path: str, front_end: FrontEndConfig) -> np.ndarray:
    """[samples] float32 in [-1, 1] at the model's rate (raises AudioReadError
    if unreadable or shorter than one STFT window)."""
    rate = front_end.sample_rate
    waveform = read_waveform(path, rate).astype(np.float32) / 32768.0
    if len(waveform) < front_end.frame_length:
        raise AudioReadError(path, f"too short to classify: {len(waveform)} samples at "
                             f"{rate} Hz, less than one {front_end.frame_length}-sample "
                             "analysis window")
    return waveform


def speaker_moments(paths: list[str], metadata: dict) -> tuple[np.ndarray | None, int]:
    """The summed moments of every readable file of `paths` (one speaker's
    clips), and how many files that was; (None, 0) if none is.

    Each file counts as the windows predict classifies (`windows`: silence
    windows of a long file skipped), WINDOW_BATCH at a time, so memory stays
    bounded on long files; the moments are centred on the model's band means.
    """
    front_end = _front_end(metadata)
    centre = np.asarray(metadata["normalisation"]["mean"], np.float32)
    compute = tf.function(lambda waveform: frontend.clip_band_moments(
        waveform, tf.fill(tf.shape(waveform)[:1], tf.shape(waveform)[1]), front_end,
        centre))
    total, used = np.zeros(1 + 2 * front_end.num_mels, np.float64), 0
    for path in paths:
        try:
            waveform = _read(path, front_end)
        except AudioReadError:
            continue  # predict reports it on the file's own line
        cuts = windows(waveform, window_samples(front_end), front_end.trim_db)
        for i in range(0, len(cuts), WINDOW_BATCH):
            total += compute(tf.constant(cuts[i:i + WINDOW_BATCH])).numpy().astype(
                np.float64).sum(axis=0)
        used += 1
    return (total.astype(np.float32) if used else None), used


def predict_file(classifier, path: str,
                 moments: np.ndarray | None = None) -> dict:
    """The JSON line of one file (raises AudioReadError if it cannot be read or
    is shorter than one STFT window); `moments`: the speaker's summed moments,
    for a speaker-normalised model."""
    metadata = classifier.metadata
    front_end = _front_end(metadata)
    waveform = _read(path, front_end)
    cuts = windows(waveform, window_samples(front_end), front_end.trim_db)
    probabilities = classifier.probabilities(cuts, moments).mean(axis=0)
    names = metadata["class_names"]
    return {"path": path, "class": names[int(np.argmax(probabilities))],
            "probabilities": {n: round(float(p), 6) for n, p in zip(names, probabilities)},
            "seconds": round(len(waveform) / front_end.sample_rate, 3),
            "windows": int(len(cuts))}


def predict(config: Config, files: list[str], out: TextIO = sys.stdout) -> int:
    """Prints one JSON line per file; returns how many files failed (could not
    be read, or, unexpectedly, made the model fail)."""
    if not files:
        raise ConfigError("--mode=predict: give one or more audio files after the flags")
    classifier = load_classifier(resolve_model(config))
    moments, speaker_files = None, 0
    if "speaker_normalisation" in classifier.metadata:
        moments, speaker_files = speaker_moments(files, classifier.metadata)
    failed = 0
    for path in files:
        try:
            line = predict_file(classifier, path, moments)
            if speaker_files:
                line["speaker_files"] = speaker_files
        except AudioReadError as error:
            failed += 1
            line = {"path": path, "error": error.reason}
        except (RuntimeError, ValueError, tf.errors.OpError) as error:
            # The model failed on this file (not expected; reported, not fatal).
            failed += 1
            line = {"path": path, "error": f"inference failed: {error}"}
        out.write(json.dumps(line) + "\n")
        out.flush()
    return failed
