"""--prepare_runner=beam writes what the local runner writes: the same clips with
the same labels in each split and shard, the same log-mel features, the same
skipped.json, and the same statistics (from tf.Transform analyzers) within float
tolerance. The Beam run goes through the real `main` in a fresh process."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

for _module in ("apache_beam", "tensorflow_transform"):
    pytest.importorskip(_module, reason=f"{_module} is not installed: the Beam runner "
                        "needs pip install '.[beam]'")

from conftest import run_main, tone, write_wav  # noqa: E402
from i2a_tf import config as config_lib  # noqa: E402
from i2a_tf.data import schema, synthetic  # noqa: E402
from i2a_tf.data.prepare import PrepareError, prepare  # noqa: E402

CLASSES = ("anger", "happiness", "sadness")
_TEXT = ("speaker", "utterance_id", "source_path", "subject")


def _flags(workdir, speech, faces, runner):
    return {"workdir": workdir, "speech_corpus": "folder", "speech_dir": speech,
            "face_corpus": "folder", "face_dir": faces, "classes": CLASSES,
            "seed": 3, "label_fraction": 0.3, "test_speaker_fraction": 0.25,
            "val_speaker_fraction": 0.3, "records_per_shard": 4,
            "precompute_logmel": True, "prepare_runner": runner}


def _command_line(values):
    out = []
    for name, value in values.items():
        if isinstance(value, bool):
            out.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, tuple):
            out.append(f"--{name}={','.join(value)}")
        else:
            out.append(f"--{name}={value}")
    return out


@pytest.fixture(scope="module")
def prepared_both(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("beam"))
    speech, faces = os.path.join(root, "speech"), os.path.join(root, "faces")
    # The generated corpus (same seed for both runners), plus files to skip.
    synthetic.generate_speech_corpus(speech, classes=CLASSES, num_speakers=5,
                                     clips_per_speaker_per_class=2,
                                     duration_s=(0.6, 1.2), seed=3)
    synthetic.generate_face_corpus(faces, classes=CLASSES, num_subjects=3,
                                   images_per_subject_per_class=2, image_size=24, seed=3)
    open(os.path.join(speech, "anger", "spk01_empty.wav"), "wb").close()
    write_wav(os.path.join(speech, "sadness", "spk02_short.wav"), tone(0.1))
    os.makedirs(os.path.join(speech, "calm"))
    write_wav(os.path.join(speech, "calm", "spk03_000.wav"), tone(0.8))
    with open(os.path.join(faces, "anger", "subj01_bad.png"), "wb") as handle:
        handle.write(b"\x89PNG broken")

    local = config_lib.config_from_flat(
        _flags(os.path.join(root, "local"), speech, faces, "local"))
    prepare(local)
    beam_flags = _flags(os.path.join(root, "beam"), speech, faces, "beam")
    result = run_main("--mode=prepare", *_command_line(beam_flags))
    assert result.returncode == 0, result.stderr
    return local.data_dir, os.path.join(root, "beam", "data")


def _json(data_dir, name):
    with open(os.path.join(data_dir, name), encoding="utf-8") as handle:
        return json.load(handle)


def _records(path, parse):
    out = []
    for record in tf.data.TFRecordDataset(path):
        parsed = parse(record)
        out.append({k: (v.numpy().decode() if k in _TEXT else v.numpy())
                    for k, v in parsed.items()})
    return out


def test_same_skipped_json(prepared_both):
    local_dir, beam_dir = prepared_both
    skipped = _json(local_dir, "skipped.json")
    assert {os.path.basename(s["path"]) for s in skipped} == {
        "spk01_empty.wav", "spk02_short.wav", "spk03_000.wav", "subj01_bad.png"}
    assert _json(beam_dir, "skipped.json") == skipped


def test_same_dataset_json_and_statistics(prepared_both):
    local_dir, beam_dir = prepared_both
    local, beam = _json(local_dir, "dataset.json"), _json(beam_dir, "dataset.json")
    local_norm, beam_norm = local.pop("normalisation"), beam.pop("normalisation")
    assert beam == local
    assert len(local["splits"]["val"]["speakers"]) >= 1
    np.testing.assert_allclose(beam_norm["mean"], local_norm["mean"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(beam_norm["std"], local_norm["std"], rtol=1e-4, atol=1e-5)


def test_same_record_files_and_examples(prepared_both):
    local_dir, beam_dir = prepared_both
    names = sorted(os.path.basename(p) for p in glob.glob(f"{local_dir}/*.tfrecord"))
    assert names == sorted(os.path.basename(p) for p in glob.glob(f"{beam_dir}/*.tfrecord"))
    assert any(name.startswith("audio-train_unlabeled-00001") for name in names)
    for name in names:
        local_path, beam_path = os.path.join(local_dir, name), os.path.join(beam_dir, name)
        if not name.startswith("logmel-"):
            # Waveforms and faces: the same bytes (same clips, labels, order).
            with open(local_path, "rb") as a, open(beam_path, "rb") as b:
                assert a.read() == b.read(), name
            continue
        local_records = _records(local_path, schema.parse_logmel)
        beam_records = _records(beam_path, schema.parse_logmel)
        assert len(beam_records) == len(local_records), name
        for ours, theirs in zip(local_records, beam_records):
            local_logmel, beam_logmel = ours.pop("logmel"), theirs.pop("logmel")
            assert theirs == ours
            np.testing.assert_allclose(np.frombuffer(beam_logmel, np.float32),
                                       np.frombuffer(local_logmel, np.float32),
                                       rtol=1e-5, atol=1e-5)


def test_no_usable_clip_fails_like_the_local_runner(tmp_path):
    speech, faces = str(tmp_path / "speech"), str(tmp_path / "faces")
    os.makedirs(os.path.join(speech, "anger"))
    write_wav(os.path.join(speech, "anger", "spk01_short.wav"), tone(0.1))
    synthetic.generate_face_corpus(faces, classes=CLASSES, num_subjects=1,
                                   images_per_subject_per_class=1, image_size=24)
    messages = {}
    for runner in ("local", "beam"):
        config = config_lib.config_from_flat(
            _flags(str(tmp_path / runner), speech, faces, runner))
        with pytest.raises(PrepareError) as error:
            prepare(config)
        messages[runner] = str(error.value).replace(f"/{runner}/", "/")
        assert _json(config.data_dir, "skipped.json")[0]["reason"].startswith("too short")
    assert messages["beam"] == messages["local"]
    assert messages["beam"].startswith("no usable speech clip")


def test_pipeline_args_reach_beam_and_unknown_ones_name_the_flag(tmp_path):
    from i2a_tf.data import prepare_beam
    args = ("--runner=DirectRunner --direct_num_workers=2 "
            "--direct_running_mode=multi_processing")
    config = config_lib.config_from_flat({"workdir": str(tmp_path),
                                          "prepare_runner": "beam",
                                          "beam_pipeline_args": args})
    options = prepare_beam.pipeline_options(config).get_all_options()
    assert (options["runner"], options["direct_num_workers"]) == ("DirectRunner", 2)
    config = config_lib.config_from_flat({"workdir": str(tmp_path),
                                          "prepare_runner": "beam",
                                          "beam_pipeline_args": "--runner=DirectRunner "
                                                                "--num_wrokers=2"})
    with pytest.raises(config_lib.ConfigError) as error:
        prepare_beam.pipeline_options(config)
    assert str(error.value) == ("--beam_pipeline_args=--runner=DirectRunner "
                                "--num_wrokers=2: Beam has no option --num_wrokers")
