"""Tests for i2a_tf.data.synthetic: layout, file formats, determinism, class signal."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import REPO_ROOT
from i2a_tf.data import synthetic

SPEECH_ARGS = dict(classes=("anger", "sadness"), num_speakers=2,
                   clips_per_speaker_per_class=2, duration_s=0.5)
FACE_ARGS = dict(classes=("anger", "fear"), num_subjects=3,
                 images_per_subject_per_class=2)


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    return root, synthetic.generate_speech_corpus(root, **SPEECH_ARGS)


@pytest.fixture(scope="module")
def face_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    return root, synthetic.generate_face_corpus(root, **FACE_ARGS)


def _files_under(root):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


def _read_pcm(path):
    return sf.read(path, dtype="int16")[0].astype(np.float64) / 32768.0


def test_speech_layout(speech_corpus):
    root, paths = speech_corpus
    expected = sorted(os.path.join(str(root), c, f"{spk}_{n:03d}.wav")
                      for c in ("anger", "sadness") for spk in ("spk01", "spk02")
                      for n in range(2))
    assert paths == expected
    assert _files_under(root) == expected


def test_speech_wav_format(speech_corpus):
    for path in speech_corpus[1]:
        info = sf.info(path)
        assert (info.format, info.subtype) == ("WAV", "PCM_16")
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 8000)


def test_speech_level_no_clipping_not_silent(speech_corpus):
    for path in speech_corpus[1]:
        peak = np.max(np.abs(_read_pcm(path)))
        # Peaks are set to 0.3-0.9 of full scale; the noise floor adds < 0.01.
        assert 0.29 < peak < 0.92, path


def test_speech_has_quiet_lead_and_tail(speech_corpus):
    for path in speech_corpus[1]:
        x = _read_pcm(path)
        # A 0.5-s clip has >= 50 ms of noise floor (>= 50 dB under the peak)
        # at each end, so its first and last 40 ms are far below the middle.
        edge = 640
        middle_rms = np.sqrt(np.mean(x[len(x) // 4:-len(x) // 4] ** 2))
        for part in (x[:edge], x[-edge:]):
            assert 0.0 < np.sqrt(np.mean(part ** 2)) < 0.05 * middle_rms, path


def test_speech_duration_range(tmp_path):
    paths = synthetic.generate_speech_corpus(
        tmp_path, classes=("fear",), num_speakers=1, clips_per_speaker_per_class=4,
        duration_s=(0.3, 0.6), sample_rate=8000)
    frames = [sf.info(p).frames for p in paths]
    assert all(2400 <= f <= 4800 for f in frames)
    assert len(set(frames)) > 1
    assert sf.info(paths[0]).samplerate == 8000


def test_face_layout_and_format(face_corpus):
    root, paths = face_corpus
    expected = sorted(os.path.join(str(root), c, f"{subj}_{n:03d}.png")
                      for c in ("anger", "fear")
                      for subj in ("subj01", "subj02", "subj03") for n in range(2))
    assert paths == expected
    assert _files_under(root) == expected
    for path in paths:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (48, 48))
            assert np.std(np.asarray(image)) > 10.0  # a face, not a blank


def test_face_image_size(tmp_path):
    (path,) = synthetic.generate_face_corpus(
        tmp_path, classes=("happiness",), num_subjects=1,
        images_per_subject_per_class=1, image_size=32)
    with Image.open(path) as image:
        assert (image.mode, image.size) == ("L", (32, 32))


_GENERATE_BOTH = """
import sys
from i2a_tf.data import synthetic
synthetic.generate_speech_corpus(sys.argv[1] + "/speech", **{speech})
synthetic.generate_face_corpus(sys.argv[1] + "/faces", **{faces})
"""


def test_same_arguments_same_bytes_across_processes(speech_corpus, face_corpus, tmp_path):
    # The second corpus comes from a fresh interpreter: determinism must not
    # rest on state of this process (e.g. Python's per-process string hashing).
    script = _GENERATE_BOTH.format(speech=SPEECH_ARGS, faces=FACE_ARGS)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env)
    for (root, paths), name in ((speech_corpus, "speech"), (face_corpus, "faces")):
        other = _files_under(tmp_path / name)
        assert [os.path.relpath(p, root) for p in paths] == [
            os.path.relpath(p, tmp_path / name) for p in other]
        for mine, theirs in zip(paths, other):
            with open(mine, "rb") as a, open(theirs, "rb") as b:
                assert a.read() == b.read(), mine


def test_files_do_not_depend_on_what_else_is_generated(speech_corpus, tmp_path):
    # One class, one speaker: the same spk01/sadness clips as in the bigger corpus.
    paths = synthetic.generate_speech_corpus(
        tmp_path, **dict(SPEECH_ARGS, classes=("sadness",), num_speakers=1))
    root = speech_corpus[0]
    for path in paths:
        with open(path, "rb") as a, open(root / os.path.relpath(path, tmp_path), "rb") as b:
            assert a.read() == b.read()


def test_seed_changes_the_corpus(speech_corpus, tmp_path):
    (path, *_) = synthetic.generate_speech_corpus(
        tmp_path, **dict(SPEECH_ARGS, num_speakers=1, clips_per_speaker_per_class=1),
        seed=1)
    assert not np.array_equal(_read_pcm(path),
                              _read_pcm(speech_corpus[0] / "anger" / "spk01_000.wav"))


def _median_f0_hz(x, sample_rate=16000):
    """Median autocorrelation pitch (60-500 Hz) over the loud 40-ms frames."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 640)[::160]
    energy = np.mean(frames ** 2, axis=1)
    lo, hi = sample_rate // 500, sample_rate // 60
    f0 = []
    for frame in frames[energy > 0.1 * energy.max()]:
        frame = frame - frame.mean()
        autocorrelation = np.correlate(frame, frame, "full")[len(frame) - 1:]
        f0.append(sample_rate / (lo + np.argmax(autocorrelation[lo:hi])))
    return np.median(f0)


def test_anger_is_louder_and_higher_than_sadness(speech_corpus):
    root = speech_corpus[0]
    for speaker in ("spk01", "spk02"):
        clips = {c: [_read_pcm(root / c / f"{speaker}_{n:03d}.wav") for n in range(2)]
                 for c in ("anger", "sadness")}
        # Class peak levels: anger 0.77-0.9, sadness 0.3-0.44 (times the same
        # speaker loudness), so a ratio of ~2 before the random gain of +-12 %.
        peak = {c: np.mean([np.max(np.abs(x)) for x in xs]) for c, xs in clips.items()}
        assert peak["anger"] > 1.3 * peak["sadness"], speaker
        # Pitch: anger +5 st, sadness -3.5 st around the speaker's base, scaled
        # by an intensity of 0.55-1: >= 4.7 st apart before ~2 st of noise.
        f0 = {c: np.mean([np.log2(_median_f0_hz(x)) for x in xs])
              for c, xs in clips.items()}
        assert 12.0 * (f0["anger"] - f0["sadness"]) > 2.0, speaker


def test_fear_opens_the_mouth_more_than_anger(face_corpus):
    root = face_corpus[0]
    for subject in ("subj01", "subj02", "subj03"):
        darkness = {}
        for c in ("anger", "fear"):
            values = []
            for n in range(2):
                image = np.asarray(Image.open(root / c / f"{subject}_{n:03d}.png"), float)
                # Mouth centre (rows 37-40 of 48) relative to the mid-face, so
                # skin tone and exposure cancel. Fear's open mouth is a dark
                # hole >= 2.5 px tall; anger's is a closed, lighter lip line.
                values.append(image[37:41, 21:27].mean() / image[28:34, 12:36].mean())
            darkness[c] = np.mean(values)
        assert darkness["anger"] - darkness["fear"] > 0.08, subject


@pytest.mark.parametrize("kwargs", [
    dict(seed=-1), dict(duration_s=0.0), dict(duration_s=(1.0, 0.5)),
    dict(num_speakers=0), dict(classes=()), dict(classes=("a", "a")),
])
def test_speech_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        synthetic.generate_speech_corpus(tmp_path, **kwargs)


def test_does_not_import_tensorflow():
    # Tools import this module to write demo data; it must stay light.
    code = ("import sys; import i2a_tf.data.synthetic; "
            "sys.exit('tensorflow' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
