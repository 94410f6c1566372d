"""prepare: nothing lost, speaker independence, labels, statistics, determinism,
clear failures; and the real `main` entry point in a fresh process."""

import glob
import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import (SMALL_DEMO as _SMALL_DEMO, run_main as _main,
                      make_folder_corpora, shared_data_available,
                      small_config, tone, write_png, write_wav)
from i2a_tf.data import schema
from i2a_tf.data.prepare import PrepareError, prepare


_TEXT = ("speaker", "utterance_id", "source_path", "subject")


def _records(data_dir, prefix, parse):
    out = []
    for path in sorted(glob.glob(os.path.join(data_dir, f"{prefix}-*.tfrecord"))):
        for record in tf.data.TFRecordDataset(path):
            parsed = parse(record)
            out.append({k: (v.numpy().decode() if k in _TEXT else v.numpy()) for k, v in parsed.items()})
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("prepare"))
    speech, faces = make_folder_corpora(os.path.join(root, "corpora"))
    # The awkward inputs: each must end up in skipped.json with its reason.
    (open(os.path.join(speech, "anger", "spkA_empty.wav"), "wb")).close()
    with open(os.path.join(speech, "anger", "spkB_corrupt.wav"), "wb") as f:
        f.write(b"RIFF....WAVEfmt garbage" * 4)
    write_wav(os.path.join(speech, "fear", "spkA_short.wav"), tone(0.1))
    write_wav(os.path.join(speech, "fear", "spkB_silent.wav"), np.zeros(16000))
    write_wav(os.path.join(speech, "neutral", "spkA_0.wav"), tone(0.8))
    with open(os.path.join(speech, "README"), "w") as f:
        f.write("not audio")
    with open(os.path.join(faces, "anger", "subj9_bad.png"), "wb") as f:
        f.write(b"\x89PNG broken")
    write_png(os.path.join(faces, "surprise", "subj1_0.png"), 9)
    config = small_config(os.path.join(root, "work"), speech, faces,
                          precompute_logmel=True)
    info = prepare(config)
    return config, info, speech, faces


def test_every_input_file_is_written_or_skipped_with_reason(prepared):
    config, info, speech, faces = prepared
    with open(os.path.join(config.data_dir, "skipped.json")) as f:
        skipped = json.load(f)
    reasons = {os.path.basename(s["path"]): s["reason"] for s in skipped}
    assert reasons["spkA_empty.wav"].startswith("empty file")
    assert reasons["spkB_corrupt.wav"].startswith("unreadable")
    assert reasons["spkA_short.wav"].startswith("too short")
    assert reasons["spkB_silent.wav"].startswith("silent")
    assert reasons["spkA_0.wav"] == "unknown label: 'neutral' is not in the label map"
    assert reasons["README"].startswith("not an audio file")
    assert reasons["subj9_bad.png"].startswith("undecodable image")
    assert reasons["subj1_0.png"].startswith("unknown label: 'surprise'")
    written = {r["source_path"] for r in _records(config.data_dir, "audio",
                                                   schema.parse_audio)}
    written |= {r["source_path"] for r in _records(config.data_dir, "faces",
                                                    schema.parse_face)}
    inputs = {os.path.relpath(p, root).replace(os.sep, "/")
              for root in (speech, faces) for p in glob.glob(f"{root}/**/*", recursive=True)
              if os.path.isfile(p)}
    skipped_paths = {os.path.relpath(s["path"], speech if s["corpus"] == "speech"
                                     else faces).replace(os.sep, "/") for s in skipped}
    assert written | skipped_paths == inputs
    assert not written & skipped_paths
    assert info["dropped_labels"] == {"speech": {"neutral": 1}, "faces": {"surprise": 1}}


def test_splits_are_speaker_independent_and_labels_hidden(prepared):
    config, info, _, _ = prepared
    splits = {split: _records(config.data_dir, f"audio-{split}", schema.parse_audio)
              for split in ("train_labeled", "train_unlabeled", "test")}
    assert {r["speaker"] for r in splits["test"]} == {"spkD"}
    for split in ("train_labeled", "train_unlabeled"):
        assert "spkD" not in {r["speaker"] for r in splits[split]}
        assert sorted(r["index"] for r in splits[split]) == list(range(len(splits[split])))
    assert all(r["label"] == -1 for r in splits["train_unlabeled"])
    assert all(r["label"] == r["true_label"] for r in splits["train_labeled"])
    assert all(r["label"] == r["true_label"] for r in splits["test"])
    # Stratified: round(0.34 * n_c) labeled clips of each class.
    per_class = np.bincount([r["label"] for r in splits["train_labeled"]], minlength=5)
    total = per_class + np.bincount([r["true_label"] for r in splits["train_unlabeled"]],
                                    minlength=5)
    assert per_class.tolist() == [max(1, round(0.34 * n)) for n in total]
    for split, records in splits.items():
        entry = info["splits"][split]
        assert entry["num_examples"] == len(records)
        assert sum(entry["counts_per_class"].values()) == len(records)
    assert info["speakers"]["test"] == ["spkD"]
    assert all(r["sample_rate"] == 16000 for r in splits["test"])


def test_statistics_are_over_training_clips_only(prepared):
    """Recompute the band statistics independently from the written records."""
    config, info, _, _ = prepared
    from i2a_tf.data import frontend

    def voiced_frames(split):
        frames = []
        for record in _records(config.data_dir, f"audio-{split}", schema.parse_audio):
            waveform = np.frombuffer(record["waveform"], "<i2") / 32768.0
            logmel = frontend.log_mel(waveform[None].astype(np.float32), config.frontend)
            count = frontend.num_frames_for([len(waveform)], config.frontend)
            start, end = frontend.voiced_bounds(logmel, count, config.frontend.trim_db)
            frames.append(logmel.numpy()[0, int(start[0]):int(end[0]) + 1])
        return np.concatenate(frames).astype(np.float64)

    train = np.concatenate([voiced_frames("train_labeled"),
                            voiced_frames("train_unlabeled")])
    stored_mean = np.asarray(info["normalisation"]["mean"])
    stored_std = np.asarray(info["normalisation"]["std"])
    np.testing.assert_allclose(stored_mean, train.mean(0), atol=1e-4)
    np.testing.assert_allclose(stored_std, np.maximum(train.std(0), 1e-3), rtol=1e-4)
    everything = np.concatenate([train, voiced_frames("test")])
    assert np.abs(everything.mean(0) - stored_mean).max() > 1e-3  # test clips excluded


def test_normalised_training_features_are_standardised(prepared):
    config, info, _, _ = prepared
    from i2a_tf.data.pipeline import DatasetInfo, audio_dataset
    import dataclasses
    data = DatasetInfo(config)
    mean = np.asarray(info["normalisation"]["mean"])
    assert mean.shape == (64,) and np.all(np.asarray(info["normalisation"]["std"]) > 0)
    # Normalised training features average ~0 per band over voiced frames.
    eval_config = dataclasses.replace(config, frontend=dataclasses.replace(
        config.frontend, pad_mode="mean", num_frames=120))
    values = []
    for split in ("train_labeled", "train_unlabeled"):
        for batch in audio_dataset(data, split, eval_config, training=False,
                                   batch_size=8):
            values.append(batch["logmel"].numpy())
    values = np.concatenate(values)  # [N, mels, T], padding exactly 0
    voiced = np.abs(values).sum(axis=1) > 0  # [N, T]
    per_band = values.transpose(0, 2, 1)[voiced]
    assert np.abs(per_band.mean(axis=0)).max() < 0.05
    assert np.allclose(per_band.std(axis=0), 1.0, atol=0.1)


def test_no_usable_file_fails_clearly(tmp_path):
    speech = tmp_path / "speech" / "anger"
    speech.mkdir(parents=True)
    (speech / "spkA_0.wav").write_bytes(b"")
    faces = tmp_path / "faces"
    write_png(str(faces / "anger" / "s_0.png"), 3)
    config = small_config(str(tmp_path / "work"), str(tmp_path / "speech"), str(faces))
    with pytest.raises(PrepareError, match=r"no usable speech clip .* 1 file\(s\) skipped"):
        prepare(config)
    with open(os.path.join(config.data_dir, "skipped.json")) as f:
        assert json.load(f)[0]["reason"].startswith("empty file")


@pytest.mark.parametrize("flag, message", [
    ("--label_fraction=1.5", "--label_fraction=1.5: must be in (0, 1]"),
    ("--label_fraction=0", "--label_fraction=0.0: must be in (0, 1]"),
    ("--speech_corpus=timit", "--speech_corpus=timit: unknown corpus"),
    ("--face_corpus=ckplus", "--face_dir=: required for --face_corpus=ckplus"),
    ("--label_map=calm:serenity", "--label_map=calm:serenity: entry 'calm:serenity' "
     "maps to a class not in --classes"),
    ("--test_speakers=nobody", "--test_speakers=nobody: speaker(s) nobody not in the "
     "corpus"),
])
def test_main_rejects_bad_values_naming_the_flag(flag, message, tmp_path):
    result = _main("--flagfile=configs/demo.cfg", f"--workdir={tmp_path}", flag,
                   *_SMALL_DEMO)
    assert result.returncode == 2
    assert message in result.stderr


def test_main_rejects_missing_directory(tmp_path):
    result = _main("--flagfile=configs/emodb_ckplus.cfg", f"--workdir={tmp_path}",
                   f"--speech_dir={tmp_path}/nowhere")
    assert result.returncode == 2
    assert f"--speech_dir={tmp_path}/nowhere: no such directory" in result.stderr


def _digests(data_dir):
    return {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in sorted(glob.glob(os.path.join(data_dir, "*")))}


def test_main_prepare_demo_is_byte_identical_across_runs(tmp_path):
    """The demo flagfile through the real entry point, twice, in fresh processes."""
    args = ["--flagfile=configs/demo.cfg", "--mode=prepare", f"--workdir={tmp_path}",
            *_SMALL_DEMO, "--precompute_logmel"]
    first = _main(*args)
    assert first.returncode == 0, first.stderr
    digests = _digests(os.path.join(tmp_path, "data"))
    with open(os.path.join(tmp_path, "config.json")) as f:
        assert json.load(f)["data"]["synthetic_speakers"] == 4
    with open(os.path.join(tmp_path, "data", "dataset.json")) as f:
        info = json.load(f)
    assert info["splits"]["train_labeled"]["num_examples"] >= 5
    assert any(name.startswith("logmel-test") for name in digests)
    second = _main(*args)
    assert second.returncode == 0, second.stderr
    assert _digests(os.path.join(tmp_path, "data")) == digests


@pytest.mark.skipif(not shared_data_available(), reason="../shared/data is absent")
def test_prepare_real_emodb_and_ckplus(tmp_path):
    result = _main("--flagfile=configs/emodb_ckplus.cfg", "--mode=prepare",
                   f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr
    with open(os.path.join(tmp_path, "data", "dataset.json")) as f:
        info = json.load(f)
    audio = sum(info["splits"][s]["num_examples"]
                for s in ("train_labeled", "train_unlabeled", "val", "test"))
    # EmoDB: 535 files, boredom (81) and neutral (79) dropped; CK+48: 981 images,
    # contempt (54) and surprise (249) dropped.
    assert audio == 535 - 81 - 79
    assert info["splits"]["faces"]["num_examples"] == 981 - 54 - 249
    assert info["dropped_labels"] == {"speech": {"boredom": 81, "neutral": 79},
                                      "faces": {"contempt": 54, "surprise": 249}}
    assert info["skipped"]["speech"] == 160 and info["skipped"]["faces"] == 303
    assert info["speakers"]["test"] == ["03", "08"]  # fold 0 of the sorted speakers
    assert not set(info["speakers"]["test"]) & set(info["speakers"]["train"])


@pytest.mark.skipif(importlib.util.find_spec("apache_beam") is not None,
                    reason="apache_beam is installed: the missing-extra error cannot occur")
def test_beam_runner_without_the_extra_names_the_install_command(tmp_path):
    result = _main("--mode=prepare", f"--workdir={tmp_path}", "--prepare_runner=beam",
                   *_SMALL_DEMO)
    assert result.returncode == 2
    assert "--prepare_runner=beam: apache_beam is not installed" in result.stderr
    assert "pip install '.[beam]'" in result.stderr
