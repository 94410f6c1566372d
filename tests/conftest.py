"""Shared fixtures: tiny fabricated corpora that follow each corpus's conventions."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, amplitude: float = 0.3,
         silence_s: float = 0.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A harmonic tone with `silence_s` of digital silence before and after.

    Returns [samples] float (or [samples, channels] when channels > 1).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(amplitude / k * np.sin(2 * np.pi * freq * k * t) for k in (1, 2, 3))
    voiced = voiced + 0.01 * rng.standard_normal(t.shape)
    pad = np.zeros(int(silence_s * rate))
    signal = np.concatenate([pad, voiced, pad])
    if channels > 1:
        signal = np.stack([signal * (0.5 + 0.5 * c) for c in range(channels)], axis=1)
    return signal


def write_wav(path: str, signal: np.ndarray, rate: int = 16000, subtype="PCM_16") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, signal, rate, subtype=subtype)
    return path


def write_png(path: str, value: int, size: int = 48, mode: str = "L") -> str:
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.full((size, size), value, np.uint8)
    pixels[size // 4: size // 2, size // 4: 3 * size // 4] = 255 - value
    Image.fromarray(pixels).convert(mode).save(path)
    return path


CLASSES = ("anger", "disgust", "fear", "happiness", "sadness")


def make_folder_corpora(root: str, speakers=("spkA", "spkB", "spkC", "spkD"),
                        clips_per_class: int = 3, seconds: float = 0.8,
                        classes=CLASSES) -> tuple[str, str]:
    """Generic-layout speech (<class>/<speaker>_<n>.wav) and faces; returns dirs."""
    speech, faces = os.path.join(root, "speech"), os.path.join(root, "faces")
    for c, name in enumerate(classes):
        for s, speaker in enumerate(speakers):
            for n in range(clips_per_class):
                write_wav(os.path.join(speech, name, f"{speaker}_{n}.wav"),
                          tone(seconds, freq=150 + 60 * c + 7 * s + n, silence_s=0.1,
                               seed=c * 100 + s * 10 + n))
        for n in range(4):
            write_png(os.path.join(faces, name, f"subj{n}_{c}.png"), 40 * c + n)
    return speech, faces


@pytest.fixture
def folder_corpora(tmp_path):
    return make_folder_corpora(str(tmp_path / "corpora"))


def small_config(workdir: str, speech_dir: str, face_dir: str, **overrides):
    from i2a_tf import config as config_lib
    values = {"workdir": workdir, "speech_corpus": "folder", "speech_dir": speech_dir,
              "face_corpus": "folder", "face_dir": face_dir, "classes": CLASSES,
              "test_speakers": ("spkD",), "label_fraction": 0.34, "num_frames": 50,
              "labeled_batch_size": 4, "unlabeled_batch_size": 4,
              "face_batch_size": 4, "eval_batch_size": 8, "shuffle_buffer": 64,
              "records_per_shard": 8}
    values.update(overrides)
    return config_lib.config_from_flat(values)


def shared_data_available() -> bool:
    return os.path.isdir(os.path.join(SHARED_DATA, "emodb", "wav")) and \
        os.path.isdir(os.path.join(SHARED_DATA, "ckplus48"))


# Flags that shrink the generated demo corpus for tests.
SMALL_DEMO = ("--synthetic_speakers=4", "--synthetic_clips_per_class=2",
              "--synthetic_subjects=3", "--synthetic_images_per_class=1")
# ... and the networks, for main runs that train in seconds.
TINY_TRAIN = (*SMALL_DEMO, "--num_frames=48", "--classifier_width=4",
               "--generator_width=4", "--discriminator_width=4", "--encoder_width=4",
               "--embedding_dim=8", "--face_code_dim=8", "--labeled_batch_size=2",
               "--unlabeled_batch_size=4", "--face_batch_size=4", "--knn_k=3")


def run_main(*args, cwd=REPO_ROOT, timeout=600):
    """`python -m i2a_tf.main *args` in a fresh process; the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "i2a_tf.main", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)
