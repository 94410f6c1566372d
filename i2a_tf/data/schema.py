"""The one definition of the TFRecord features; writers and readers import it.

Three record kinds:

* audio: a 16 kHz mono waveform, int16 little-endian bytes, with its labels.
* logmel: the same clip's unnormalised log-mel `[frames, mels]` float32 bytes
  (written only with `--precompute_logmel`; the waveform path stays the reference).
* face: a grayscale image, uint8 bytes `[height, width]`, with its label.

`label` is the canonical class id, or -1 where it is hidden (the unlabeled split);
`true_label` is always the real class id, kept only for analysing pseudo-labels and
never fed to a loss. `index` is the clip's position in its split, so per-clip state
(pseudo-labels) can live in variables indexed by it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

HIDDEN_LABEL = -1
WAVEFORM_DTYPE = np.dtype("<i2")
LOGMEL_DTYPE = np.dtype("<f4")

_COMMON_AUDIO = {
    "label": tf.io.FixedLenFeature([], tf.int64),
    "true_label": tf.io.FixedLenFeature([], tf.int64),
    "speaker": tf.io.FixedLenFeature([], tf.string),
    "utterance_id": tf.io.FixedLenFeature([], tf.string),
    "index": tf.io.FixedLenFeature([], tf.int64),
    "source_path": tf.io.FixedLenFeature([], tf.string),
}

AUDIO_FEATURES = {
    "waveform": tf.io.FixedLenFeature([], tf.string),
    "num_samples": tf.io.FixedLenFeature([], tf.int64),
    "sample_rate": tf.io.FixedLenFeature([], tf.int64),
    **_COMMON_AUDIO,
}

LOGMEL_FEATURES = {
    "logmel": tf.io.FixedLenFeature([], tf.string),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    "num_mels": tf.io.FixedLenFeature([], tf.int64),
    **_COMMON_AUDIO,
}

FACE_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "subject": tf.io.FixedLenFeature([], tf.string),
    "source_path": tf.io.FixedLenFeature([], tf.string),
}


def _bytes(value: bytes | str) -> tf.train.Feature:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _serialize(features: dict[str, tf.train.Feature]) -> bytes:
    example = tf.train.Example(features=tf.train.Features(feature=features))
    # Map fields serialize in a per-process order unless asked not to (STYLE 14).
    return example.SerializeToString(deterministic=True)


def _common_audio(label, true_label, speaker, utterance_id, index, source_path):
    return {
        "label": _int(label),
        "true_label": _int(true_label),
        "speaker": _bytes(speaker),
        "utterance_id": _bytes(utterance_id),
        "index": _int(index),
        "source_path": _bytes(source_path),
    }


def audio_example(waveform: np.ndarray, sample_rate: int, *, label: int,
                  true_label: int, speaker: str, utterance_id: str, index: int,
                  source_path: str) -> bytes:
    """Serialized audio record. `waveform`: [samples] int16, mono."""
    waveform = np.asarray(waveform)
    if waveform.dtype != np.int16 or waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D int16, got {waveform.dtype} "
                         f"{waveform.shape} for {source_path}")
    return _serialize({
        "waveform": _bytes(waveform.astype(WAVEFORM_DTYPE).tobytes()),
        "num_samples": _int(waveform.shape[0]),
        "sample_rate": _int(sample_rate),
        **_common_audio(label, true_label, speaker, utterance_id, index, source_path),
    })


def logmel_example(logmel: np.ndarray, *, label: int, true_label: int, speaker: str,
                   utterance_id: str, index: int, source_path: str) -> bytes:
    """Serialized log-mel record. `logmel`: [frames, mels] float32, unnormalised."""
    logmel = np.asarray(logmel, dtype=LOGMEL_DTYPE)
    return _serialize({
        "logmel": _bytes(logmel.tobytes()),
        "num_frames": _int(logmel.shape[0]),
        "num_mels": _int(logmel.shape[1]),
        **_common_audio(label, true_label, speaker, utterance_id, index, source_path),
    })


def face_example(image: np.ndarray, *, label: int, subject: str,
                 source_path: str) -> bytes:
    """Serialized face record. `image`: [height, width] uint8 grayscale."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"image must be 2-D uint8, got {image.dtype} {image.shape} "
                         f"for {source_path}")
    return _serialize({
        "image": _bytes(image.tobytes()),
        "height": _int(image.shape[0]),
        "width": _int(image.shape[1]),
        "label": _int(label),
        "subject": _bytes(subject),
        "source_path": _bytes(source_path),
    })


# What a served audio record needs: a client classifying a clip has no labels,
# speaker or index to fill in.
SERVED_AUDIO_FEATURES = {name: AUDIO_FEATURES[name]
                         for name in ("waveform", "num_samples", "sample_rate")}


def parse_audio(serialized: tf.Tensor, served_only: bool = False) -> dict[str, tf.Tensor]:
    """Parses audio records. `serialized`: [] or [batch] tf.string.

    Returns the schema's features (only `SERVED_AUDIO_FEATURES` when
    `served_only`, so other fields may be absent), with `waveform` left as raw
    bytes (decode with `decode_waveform_int16`).
    """
    return _parse(serialized, SERVED_AUDIO_FEATURES if served_only else AUDIO_FEATURES)


def parse_logmel(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    return _parse(serialized, LOGMEL_FEATURES)


def parse_face(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    return _parse(serialized, FACE_FEATURES)


def _parse(serialized, spec):
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, spec)
    return tf.io.parse_example(serialized, spec)


def decode_waveform_int16(raw: tf.Tensor) -> tf.Tensor:
    """int16 bytes (scalar string) -> [samples] int16 (cast late: half the bytes
    to move through batching)."""
    return tf.io.decode_raw(raw, tf.int16, little_endian=True)


def waveform_to_float(samples: tf.Tensor) -> tf.Tensor:
    """int16 samples (any shape) -> float32 in [-1, 1)."""
    return tf.cast(samples, tf.float32) / 32768.0


def decode_logmel(raw: tf.Tensor, num_mels: int) -> tf.Tensor:
    """float32 bytes (scalar string) -> [frames, num_mels] float32."""
    values = tf.io.decode_raw(raw, tf.float32, little_endian=True)
    return tf.reshape(values, [-1, num_mels])


def decode_faces(raw: tf.Tensor, size: int) -> tf.Tensor:
    """[B] uint8 image bytes of size x size faces -> [B, size, size, 1] uint8."""
    pixels = tf.io.decode_raw(raw, tf.uint8)
    return tf.reshape(pixels, [-1, size, size, 1])
