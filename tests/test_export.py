"""--mode=export and --mode=predict on a model trained by the real main.

One tiny supervised run (module fixture) trains and exports; the tests read what
it wrote, reload it in fresh processes and run predict on real audio files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import SMALL_DEMO, run_main, tone, write_wav
from i2a_tf import config as config_lib
from i2a_tf.data import frontend
from i2a_tf.data.dataset_info import DatasetInfo
from i2a_tf.data.pipeline import eval_dataset, speaker_moments, split_clips
from i2a_tf.export import exporter, predict, tflite, warmup
from i2a_tf.export.serving import CLIENT_JSON, existing_versions, window_samples

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness"]
_PREPARE = ("--flagfile=configs/demo.cfg", *SMALL_DEMO, "--num_frames=48")
_EXPORT = (*_PREPARE, "--representative_clips=16", "--latency_runs=2")


def _fit_and_export(root: str, flags: tuple = (), export_flags: tuple = (),
                    **config_fields) -> dict:
    """A prepared demo corpus under `root`, a small classifier fitted to all its
    training clips (confident, varied outputs, unlike a few steps of the full
    method, so parity checks mean something) and one real export through main;
    `flags` go to every main call, `config_fields` to the fitting's config."""
    import keras
    from i2a_tf.models import build_classifier
    workdir = os.path.join(root, "run")
    prepared = run_main(*_PREPARE, *flags, f"--workdir={workdir}", "--mode=prepare")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    config = config_lib.config_from_flat({"workdir": workdir, "num_frames": 48,
                                          **config_fields})
    keras.utils.set_random_seed(0)
    classifier = build_classifier(5, 64, 48, width=8, embedding_dim=16, dropout=0.0)
    train = eval_dataset(config, "train_labeled").concatenate(
        eval_dataset(config, "train_unlabeled"))
    classifier.compile(keras.optimizers.Adam(3e-3),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = train.map(lambda b: (b["logmel"], b["true_label"])).cache()
    batches = sum(1 for _ in train)
    classifier.fit(train.repeat(), steps_per_epoch=batches, epochs=10, shuffle=False,
                   verbose=0)
    classifier.save(config.classifier_path)
    result = run_main(*_EXPORT, *flags, *export_flags, f"--workdir={workdir}",
                      "--mode=evaluate,export")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"workdir": workdir, "config": config,
            "saved_model": os.path.join(config.saved_model_base, "1"),
            "tflite": os.path.join(config.tflite_base, "1")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default model, fitted and exported by `_fit_and_export`."""
    return _fit_and_export(str(tmp_path_factory.mktemp("export")))


def _int8_tensors(path: str) -> tuple[int, int, int]:
    """(int8 constants, int8 activations, int8 inputs of LOG ops) of a .tflite."""
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.read_model(path)
    graph = model.subgraphs[0]
    int8 = flatbuffer_utils.schema_fb.TensorType.INT8
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    log_code = flatbuffer_utils.schema_fb.BuiltinOperator.LOG
    constant = [model.buffers[t.buffer].data is not None for t in graph.tensors]
    is_int8 = [t.type == int8 for t in graph.tensors]
    log_inputs = [i for op in graph.operators if codes[op.opcodeIndex] == log_code
                  for i in op.inputs]
    return (sum(q and c for q, c in zip(is_int8, constant)),
            sum(q and not c for q, c in zip(is_int8, constant)),
            sum(is_int8[i] for i in log_inputs))


def _report(exported) -> dict:
    with open(os.path.join(exported["tflite"], exporter.REPORT_JSON)) as f:
        return json.load(f)


def test_export_layout_and_report(exported):
    saved_model = exported["saved_model"]
    for name in ("saved_model.pb", "variables", "assets/" + CLIENT_JSON,
                 "assets.extra/" + warmup.WARMUP_FILE):
        assert os.path.exists(os.path.join(saved_model, name)), name
    # Only complete versions are visible: no temporary folders left behind.
    for base in (exported["config"].saved_model_base, exported["config"].tflite_base):
        assert "1" in os.listdir(base)
        assert not [name for name in os.listdir(base) if not name.isdigit()]
    with open(os.path.join(saved_model, "assets", CLIENT_JSON)) as f:
        client = json.load(f)
    assert client["class_names"] == CLASSES
    assert client["sample_rate"] == 16000 and client["window_samples"] == 47 * 160 + 400
    report = _report(exported)
    saved = report["saved_model"]
    assert saved["argmax_agreement_vs_keras"] == 1.0
    assert saved["max_abs_difference_vs_keras"] < 1e-5
    with open(os.path.join(exported["workdir"], "metrics.json")) as f:
        assert saved["keras_uar"] == pytest.approx(json.load(f)["uar"])
    assert set(report["tflite"]) == {"float32", "dynamic_range", "int8"}
    for variant, entry in report["tflite"].items():
        assert os.path.getsize(os.path.join(exported["tflite"], f"{variant}.tflite")) \
            == entry["bytes"]
        assert entry["latency_ms_per_clip"] > 0
    assert report["tflite"]["float32"]["max_abs_difference"] < 1e-4
    # Which tensors are int8: none in float32; weights only in dynamic_range;
    # weights and activations in int8, but not the front end's (float).
    counts = {v: _int8_tensors(os.path.join(exported["tflite"], f"{v}.tflite"))
              for v in report["tflite"]}
    assert counts["float32"] == (0, 0, 0)
    assert counts["dynamic_range"][0] > 0 and counts["dynamic_range"][1] == 0
    assert counts["int8"][0] > 0 and counts["int8"][1] > 0
    assert counts["int8"][2] == 0
    assert set(report["targets"]) == {"int8_agreement", "int8_uar_drop_points",
                                      "int8_bytes_fraction_of_float32"}
    # --int8_weights=auto (the default) chose on training clips and says so.
    int8 = report["tflite"]["int8"]
    assert int8["int8_weights"] in ("per_tensor", "per_channel")
    assert int8["int8_weights_chosen_by"].startswith("auto: per-tensor int8 agreed")
    drop = report["targets"]["int8_uar_drop_points"]
    assert drop["clips_worse"] >= 0 and 0 < drop["worse_p_value"] <= 1


def test_uar_drop_target_counts_only_a_measured_change():
    # One-sided exact McNemar by hand: 2 worse, 0 better: 1/4; 5-0: 1/32;
    # 6-1: (C(7,6) + C(7,7)) / 2^7 = 8/128.
    assert exporter.worse_p_value(2, 0) == pytest.approx(0.25)
    assert exporter.worse_p_value(5, 0) == pytest.approx(1 / 32)
    assert exporter.worse_p_value(6, 1) == pytest.approx(8 / 128)
    assert exporter.worse_p_value(0, 0) == 1.0
    int8 = {"argmax_agreement": 0.98, "uar_drop_points": 2.0, "bytes": 29,
            "clips_worse": 2, "clips_better": 0, "worse_p_value": 0.25}
    variants = {"int8": int8, "float32": {"bytes": 100}}
    # The demo's case: 2 of 100 clips flipped to wrong, 2 points: not a finding.
    assert exporter._targets(variants)["int8_uar_drop_points"]["met"]
    assert exporter._targets(variants)["int8_bytes_fraction_of_float32"]["met"]
    int8.update(clips_worse=5, worse_p_value=1 / 32, uar_drop_points=5.0)
    assert not exporter._targets(variants)["int8_uar_drop_points"]["met"]
    # A float artefact of exactly one point is one point.
    int8.update(uar_drop_points=1.0000000000000009)
    assert exporter._targets(variants)["int8_uar_drop_points"]["met"]


_ROUND_TRIP = r"""
import sys, numpy as np, tensorflow as tf
directory, inputs, directory_examples, outputs = sys.argv[1:]
data = np.load(inputs)
loaded = tf.saved_model.load(directory)
results = {}
for name in ("waveform", "short", "long"):
    out = loaded.signatures["serving_default"](waveform=tf.constant(data[name]))
    results[name] = out["probabilities"].numpy()
    results[name + "_names"] = out["class_names"].numpy().astype(str)
out = loaded.signatures["classify_logmel"](logmel=tf.constant(data["logmel"]))
results["logmel"] = out["probabilities"].numpy()
examples = [r.numpy() for r in tf.data.TFRecordDataset(directory_examples)]
out = loaded.signatures["serve_examples"](examples=tf.constant(examples))
results["examples"] = out["probabilities"].numpy()
results["examples_ids"] = out["class_ids"].numpy()
np.savez(outputs, **results)
"""


def test_saved_model_round_trip_in_a_fresh_process(exported, tmp_path):
    import keras
    config = exported["config"]
    data = DatasetInfo(config)
    classifier = keras.saving.load_model(config.classifier_path)

    def in_memory(waveform, num_samples=None):
        waveform = np.asarray(waveform, np.float32)
        if num_samples is None:
            num_samples = [waveform.shape[1]] * waveform.shape[0]
        features = frontend.waveform_features(waveform, num_samples, data.statistics,
                                              config.frontend)
        return features, tf.nn.softmax(classifier(features, training=False)).numpy()

    window = window_samples(config.frontend)
    clips = [np.resize(tone(1.0, freq=f, silence_s=0.05), window) for f in (150, 260, 330)]
    inputs = {"waveform": np.stack(clips).astype(np.float32),
              "short": tone(0.2, freq=200)[None].astype(np.float32),
              "long": np.resize(tone(1.0, freq=310), (2, 3 * window)).astype(np.float32)}
    examples = str(tmp_path / "examples.tfrecord")
    with tf.io.TFRecordWriter(examples) as writer:  # 4 training-schema records
        for record in tf.data.TFRecordDataset(data.files("test", "audio")).take(4):
            writer.write(record.numpy())
    logmel, _ = in_memory(inputs["waveform"])
    inputs["logmel"] = logmel.numpy()
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "round_trip.py"
    script.write_text(_ROUND_TRIP)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(script), exported["saved_model"],
                           str(tmp_path / "inputs.npz"), examples,
                           str(tmp_path / "out.npz")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    served = np.load(tmp_path / "out.npz")

    for name in ("waveform", "short", "long"):
        _, expected = in_memory(inputs[name])
        np.testing.assert_allclose(served[name], expected, rtol=1e-5, atol=1e-6)
        assert list(served[name + "_names"]) == [CLASSES[i] for i in expected.argmax(1)]
    _, expected = in_memory(inputs["waveform"])
    np.testing.assert_allclose(served["logmel"], expected, rtol=1e-5, atol=1e-6)
    # serve_examples: the same clips as the training records hold them.
    clips = split_clips(data, "test", 4)
    longest = max(len(c["waveform"]) for c in clips)
    padded = np.stack([np.pad(c["waveform"], (0, longest - len(c["waveform"])))
                       for c in clips])
    _, expected = in_memory(padded, [len(c["waveform"]) for c in clips])
    np.testing.assert_allclose(served["examples"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served["examples_ids"], expected.argmax(1))


def test_saved_model_cli_lists_the_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([cli, "show", "--dir", exported["saved_model"], "--all"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for text in ("signature_def['serving_default']", "signature_def['classify_logmel']",
                 "signature_def['serve_examples']", "inputs['waveform']",
                 "inputs['logmel']", "inputs['examples']", "outputs['probabilities']",
                 "outputs['class_ids']", "outputs['class_names']"):
        assert text in done.stdout, text



def test_saved_model_cli_runs_serving_default(exported, tmp_path):
    """`saved_model_cli run` loads the model the way TF Serving does (a TF1
    session); a Keras 3 model saved naively fails here with "Could not find
    variable" although `tf.saved_model.load` works."""
    waveform = np.resize(tone(0.3, freq=210), (1, 6000)).astype(np.float32)
    np.save(tmp_path / "waveform.npy", waveform)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    done = subprocess.run(
        [cli, "run", "--dir", exported["saved_model"], "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs",
         f"waveform={tmp_path / 'waveform.npy'}", "--outdir", str(tmp_path / "out")],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    served = np.load(tmp_path / "out" / "probabilities.npy")
    loaded = tf.saved_model.load(exported["saved_model"])
    expected = loaded.signatures["serving_default"](waveform=tf.constant(waveform))
    np.testing.assert_allclose(served, expected["probabilities"].numpy(), rtol=1e-5,
                               atol=1e-6)


def test_warmup_requests_parse_and_run(exported):
    requests = warmup.read_warmup_requests(exported["saved_model"])
    window = 47 * 160 + 400
    shapes = [tuple(tf.make_ndarray(r.inputs["waveform"]).shape) for r in requests]
    assert shapes == [(1, window), (2, window), (1, window // 2)]
    for request in requests:
        assert request.model_spec.name == "image2audio"
        assert request.model_spec.signature_name == "serving_default"
        assert request.inputs["waveform"].dtype == tf.float32.as_datatype_enum
    outputs = warmup.run_warmup_requests(exported["saved_model"])  # TF1 session
    for shape, output in zip(shapes, outputs):
        assert output["probabilities"].shape == (shape[0], 5)
        np.testing.assert_allclose(output["probabilities"].sum(1), 1.0, rtol=1e-5)


# Agreement and max |p - p_saved_model| on 10 test clips; measured on the
# fixture: int8 0.9 / 0.032 (one near-tie flips), dynamic range 1.0 / 0.0044.
# The int8 model with its front end quantized too gives 0.1 / 0.15 (test below).
_PARITY = {"float32": (1.0, 1e-4), "dynamic_range": (0.8, 0.05), "int8": (0.8, 0.1)}


def _parity(model_path: str, saved_model: str, config) -> tuple[float, float]:
    with open(model_path, "rb") as f:
        runner = tflite.LiteModel(f.read())
    loaded = tf.saved_model.load(saved_model)
    serve = loaded.signatures["serving_default"]
    clips = split_clips(DatasetInfo(config), "test", 10)
    lite = np.stack([runner.probabilities(c["waveform"]) for c in clips])
    served = np.stack([serve(waveform=tf.constant(c["waveform"][None]))
                       ["probabilities"].numpy()[0] for c in clips])
    return (float(np.mean(lite.argmax(1) == served.argmax(1))),
            float(np.max(np.abs(lite - served))))


@pytest.mark.parametrize("variant", sorted(_PARITY))
def test_tflite_parity_with_the_saved_model(exported, variant):
    path = os.path.join(exported["tflite"], f"{variant}.tflite")
    with open(path, "rb") as f, \
            open(os.path.join(exported["saved_model"], "assets", CLIENT_JSON)) as g:
        assert tflite.read_metadata(f.read()) == json.load(g)
    agreement, difference = _parity(path, exported["saved_model"], exported["config"])
    min_agreement, max_difference = _PARITY[variant]
    assert agreement >= min_agreement
    assert difference <= max_difference


def test_a_quantized_front_end_fails_the_parity_thresholds(exported, tmp_path):
    """Why the default keeps the front end in float, and proof that the
    thresholds above catch a broken quantization."""
    result = run_main(*_EXPORT, f"--workdir={exported['workdir']}", "--mode=export",
                      f"--export_dir={tmp_path}", "--tflite_variants=int8",
                      "--int8_frontend=int8")
    assert result.returncode == 0, result.stderr[-3000:]
    agreement, difference = _parity(
        os.path.join(tmp_path, "image2audio_tflite", "1", "int8.tflite"),
        exported["saved_model"], exported["config"])
    min_agreement, max_difference = _PARITY["int8"]
    assert agreement < min_agreement or difference > max_difference


def _audio_files(directory) -> dict[str, str]:
    files = {
        "mono16k": write_wav(os.path.join(directory, "mono16k.wav"),
                             tone(0.4, freq=220, silence_s=0.05)),
        "stereo48k": write_wav(os.path.join(directory, "stereo48k.wav"),
                               tone(1.5, rate=48000, freq=180, channels=2), rate=48000),
        "flac": write_wav(os.path.join(directory, "clip.flac"),
                          tone(0.3, freq=300), subtype="PCM_16"),
        "corrupt": os.path.join(directory, "corrupt.wav"),
        "too_short": write_wav(os.path.join(directory, "too_short.wav"), tone(0.01)),
    }
    with open(files["corrupt"], "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    return files


@pytest.mark.parametrize("model", ["saved_model", "int8.tflite"])
def test_predict_on_audio_files(exported, tmp_path, model):
    files = _audio_files(str(tmp_path))
    model_path = (exported["saved_model"] if model == "saved_model"
                  else os.path.join(exported["tflite"], model))
    result = run_main("--mode=predict", f"--model={model_path}", *files.values())
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 of 5 files failed" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == list(files.values())
    by_name = dict(zip(files, lines))
    assert by_name["corrupt"]["error"].startswith("unreadable audio: ")
    assert "corrupt.wav" in by_name["corrupt"]["error"]
    assert by_name["too_short"]["error"] == ("too short to classify: 160 samples at "
                                             "16000 Hz, less than one 400-sample "
                                             "analysis window")
    for name in ("mono16k", "stereo48k", "flac"):
        line = by_name[name]
        assert line["class"] in CLASSES
        assert list(line["probabilities"]) == CLASSES
        # int8 softmax outputs are multiples of 1/256: their sum is within 5/256.
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=0.02)
        assert line["class"] == max(line["probabilities"], key=line["probabilities"].get)
    assert by_name["stereo48k"]["seconds"] == pytest.approx(1.5)
    # 24,000 samples in 7,920-sample windows at a 3,960 hop: starts 0 ... 15,840,
    # and one more ending at the file's end.
    assert by_name["stereo48k"]["windows"] == 6
    assert by_name["mono16k"]["windows"] == 2 and by_name["flac"]["windows"] == 1


def test_predict_matches_the_served_model_on_one_window(exported, tmp_path):
    clip = np.round(tone(0.45, freq=240, silence_s=0.01) * 32767).astype(np.int16)
    path = write_wav(str(tmp_path / "one.wav"), clip)
    result = run_main("--mode=predict", f"--model={exported['config'].saved_model_base}",
                      path)
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout)
    assert line["windows"] == 1
    samples = clip / 32768.0  # what predict decodes
    loaded = tf.saved_model.load(exported["saved_model"])
    expected = loaded.signatures["serving_default"](
        waveform=tf.constant(samples[None], tf.float32))["probabilities"]
    np.testing.assert_allclose(list(line["probabilities"].values()),
                               expected.numpy()[0], atol=2e-6)


def test_export_writes_the_next_version_and_refuses_an_existing_one(exported):
    args = (*_EXPORT, f"--workdir={exported['workdir']}", "--mode=export",
            "--tflite_variants=float32")
    refused = run_main(*args, "--export_version=1")
    assert refused.returncode == 2
    assert "--export_version=1: version 1 already exists" in refused.stderr
    done = run_main(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    config = exported["config"]
    assert existing_versions(config.saved_model_base) == [1, 2]
    assert sorted(os.listdir(os.path.join(config.tflite_base, "2"))) == sorted([
        CLIENT_JSON, exporter.REPORT_JSON, "float32.tflite"])
    # predict without --model takes the highest version.
    assert predict.resolve_model(config) == os.path.join(config.saved_model_base, "2")


@pytest.mark.parametrize("args, message", [
    (("--mode=predict",), "--mode=predict: give one or more audio files"),
    (("--mode=predict", "--model=/nowhere/model", "a.wav"), "--model=/nowhere/model: "
     "not a SavedModel folder"),
])
def test_bad_export_and_predict_arguments_name_the_flag(tmp_path, args, message):
    result = run_main(f"--workdir={tmp_path}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr


def test_export_refuses_a_front_end_the_classifier_was_not_trained_with(exported):
    result = run_main(*_EXPORT, f"--workdir={exported['workdir']}", "--mode=export",
                      "--pad_mode=mean")
    assert result.returncode == 2
    assert "--pad_mode=mean: the classifier in" in result.stderr
    assert "was trained with pad_mode=repeat" in result.stderr


def test_a_failed_export_leaves_no_version_and_no_temporary_folder(exported, tmp_path,
                                                                   monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(tflite, "convert", broken)
    config = config_lib.config_from_flat({
        "workdir": exported["workdir"], "num_frames": 48, "export_dir": str(tmp_path)})
    # A folder left by an export that was killed (no such process).
    stale = os.path.join(config.saved_model_base, ".tmp-7-999999999")
    os.makedirs(stale)
    with pytest.raises(RuntimeError, match="conversion failed"):
        exporter.export(config)
    assert os.listdir(config.saved_model_base) == []
    assert os.listdir(config.tflite_base) == []


def test_files_without_predict_are_refused(tmp_path):
    result = run_main(f"--workdir={tmp_path}", "--mode=prepare", "a.wav")
    assert result.returncode == 2
    assert "only --mode=predict takes files" in result.stderr


def test_export_without_a_trained_classifier_names_the_workdir(tmp_path):
    result = run_main("--flagfile=configs/demo.cfg", f"--workdir={tmp_path}",
                      "--mode=export")
    assert result.returncode == 2
    assert f"--workdir={tmp_path}: no trained classifier" in result.stderr


def test_windows_cover_long_files_and_skip_silence():
    signal = np.ones(1000, np.float32) * 0.1
    assert predict.windows(signal[:300], 400, 40.0).shape == (1, 300)
    cuts = predict.windows(signal, 400, 40.0)
    # Starts 0, 200, 400, 600: the last one ends at the file's end.
    assert cuts.shape == (4, 400)
    silent_start = np.concatenate([np.zeros(600, np.float32), signal[:400]])
    cuts = predict.windows(silent_start, 400, 40.0)
    # Windows at 0 and 200 are digital silence: skipped.
    assert cuts.shape == (2, 400) and np.all(cuts[:, -1] == np.float32(0.1))
    assert predict.windows(silent_start, 400, 0.0).shape == (4, 400)


def test_choose_version_takes_the_next_free_integer(tmp_path):
    config = config_lib.config_from_flat({"workdir": str(tmp_path)})
    assert exporter.choose_version(config) == 1
    for name in ("1", "3", ".tmp-4-123", "notes"):
        os.makedirs(os.path.join(config.saved_model_base, name))
    assert exporter.choose_version(config) == 4
    os.makedirs(os.path.join(config.tflite_base, "5"))  # reserved by another export
    assert exporter.choose_version(config) == 6
    pinned = config_lib.config_from_flat({"workdir": str(tmp_path), "export_version": 2})
    assert exporter.choose_version(pinned) == 2


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_int8_weight_scales_per_channel_or_per_tensor(per_channel):
    """--int8_weights: the conv kernels carry one scale per output channel, or one."""
    from tensorflow.lite.tools import flatbuffer_utils
    from i2a_tf.export.serving import ServingModule
    from i2a_tf.models import build_classifier
    config = config_lib.FrontEndConfig(num_frames=20)
    statistics = frontend.BandStatistics(np.zeros(64, np.float32), np.ones(64, np.float32))
    classifier = build_classifier(5, 64, 20, width=4, embedding_dim=8, dropout=0.0)
    module = ServingModule(classifier, tuple(CLASSES), statistics, config)

    def representative():
        for seed in range(4):
            yield [tone(0.3, freq=150 + 50 * seed, seed=seed)[None].astype(np.float32)]

    model = flatbuffer_utils.convert_bytearray_to_object(tflite.convert(
        module.lite_function(), "int8", representative, per_channel=per_channel))
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    conv = flatbuffer_utils.schema_fb.BuiltinOperator.CONV_2D  # what Conv1D becomes
    kernels = [graph.tensors[op.inputs[1]] for op in graph.operators
               if codes[op.opcodeIndex] == conv]
    assert len(kernels) == 6
    for kernel in kernels:
        assert kernel.type == flatbuffer_utils.schema_fb.TensorType.INT8
        assert len(kernel.quantization.scale) == (kernel.shape[0] if per_channel else 1)


def test_lite_model_falls_back_to_builtin_kernels_when_xnnpack_refuses(exported,
                                                                       monkeypatch):
    """Seen with an int8 model of a collapsed classifier: XNNPack refused the
    graph at the first invoke. Simulated here; the builtin kernels must run it."""
    from ai_edge_litert import interpreter as litert
    with open(os.path.join(exported["tflite"], "float32.tflite"), "rb") as f:
        model = f.read()
    clip = tone(0.3, freq=190).astype(np.float32)
    expected = tflite.LiteModel(model).probabilities(clip)

    class Refusing(litert.Interpreter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.builtin = kwargs.get("experimental_op_resolver_type") == \
                litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES

        def invoke(self):
            if not self.builtin:
                raise RuntimeError("failed to create XNNPACK runtimeNode number 9 "
                                   "(TfLiteXNNPackDelegate) failed to prepare.")
            super().invoke()

    monkeypatch.setattr(litert, "Interpreter", Refusing)
    runner = tflite.LiteModel(model)
    assert runner.runtime == "xnnpack"
    np.testing.assert_allclose(runner.probabilities(clip), expected, atol=1e-5)
    assert runner.runtime == "builtin"


def test_classifier_with_band_statistics_converts_to_tflite():
    """--classifier_statistics adds mean / std over time (TimeStatistics):
    builtin TFLite ops, float model within 1e-4 of the Keras-side module."""
    from i2a_tf.export.serving import ServingModule
    from i2a_tf.models import build_classifier
    config = config_lib.FrontEndConfig(num_frames=20)
    statistics = frontend.BandStatistics(np.zeros(64, np.float32), np.ones(64, np.float32))
    classifier = build_classifier(5, 64, 20, width=4, embedding_dim=8, dropout=0.0,
                                  statistics=True)
    module = ServingModule(classifier, tuple(CLASSES), statistics, config)
    function = module.lite_function()
    clip = tone(0.3, freq=220, seed=1).astype(np.float32)
    expected = function(tf.constant(clip[None]))["probabilities"].numpy()[0]
    lite = tflite.LiteModel(tflite.convert(function, "float32"))
    np.testing.assert_allclose(lite.probabilities(clip), expected, atol=1e-4)


# -- A speaker-normalised model ---------------------------------------------------

_SPEAKER = ("--speaker_normalisation=mean_std",)


@pytest.fixture(scope="module")
def speaker_exported(tmp_path_factory):
    """A classifier fitted on speaker-normalised inputs and exported through
    main with --speaker_normalisation (float32 and int8 TFLite)."""
    return _fit_and_export(str(tmp_path_factory.mktemp("export_speaker")), _SPEAKER,
                           ("--tflite_variants=float32,int8",),
                           speaker_normalisation="mean_std")


def test_speaker_normalised_export_feeds_each_clip_its_speakers_moments(
        speaker_exported):
    report = _report(speaker_exported)
    assert report["speaker_normalisation"] == "mean_std"
    saved = report["saved_model"]
    # The served graph and the training pipeline normalise every test clip alike.
    assert saved["argmax_agreement_vs_keras"] == 1.0
    assert saved["max_abs_difference_vs_keras"] < 1e-4
    check = saved["speaker_moments_vs_training"]
    assert check["speakers"] == len(DatasetInfo(speaker_exported["config"])
                                    .info["speakers"]["test"])
    assert check["max_abs_mean_difference"] < 1e-3
    assert check["max_abs_std_difference"] < 1e-3
    assert report["tflite"]["float32"]["argmax_agreement"] == 1.0
    assert report["tflite"]["int8"]["argmax_agreement"] >= 0.8
    with open(os.path.join(speaker_exported["saved_model"], "assets", CLIENT_JSON)) as f:
        metadata = json.load(f)
    assert metadata["speaker_normalisation"]["mode"] == "mean_std"
    assert "speaker_moments" in metadata["inputs"]["serving_default"]


def test_speaker_normalised_model_depends_on_the_speaker_moments(speaker_exported):
    config = speaker_exported["config"]
    data = DatasetInfo(config)
    loaded = tf.saved_model.load(speaker_exported["saved_model"])
    serve = loaded.signatures["serving_default"]
    clip = split_clips(data, "test", 1)[0]
    waveform = tf.constant(clip["waveform"][None])
    own = speaker_moments(data, config.frontend)[clip["speaker"]].astype(np.float32)
    # The same clip with its own speaker's moments and with the training
    # split's statistics as its "speaker": the probabilities move.
    mine = serve(waveform=waveform, speaker_moments=tf.constant(own[None]))
    other = serve(waveform=waveform, speaker_moments=tf.constant(
        frontend.moment_sums_of(data.statistics, data.statistics.mean)[None]))
    assert np.abs(mine["probabilities"].numpy() - other["probabilities"].numpy()).max() > 1e-4
    # Moments scale freely: the same statistics from n frames or from 1,000 n.
    scaled = serve(waveform=waveform, speaker_moments=tf.constant(1000 * own[None]))
    np.testing.assert_allclose(scaled["probabilities"].numpy(),
                               mine["probabilities"].numpy(), atol=1e-5)
    # No frames: the training split's statistics, as with the fallback row.
    unknown = serve(waveform=waveform, speaker_moments=tf.zeros([1, 129]))
    np.testing.assert_allclose(unknown["probabilities"].numpy(),
                               other["probabilities"].numpy(), atol=1e-5)
    outputs = warmup.run_warmup_requests(speaker_exported["saved_model"])
    requests = warmup.read_warmup_requests(speaker_exported["saved_model"])
    assert [r.model_spec.signature_name for r in requests][-1] == "speaker_moments"
    assert outputs[-1]["moments"].shape == (1, 129)
    assert all("speaker_moments" in r.inputs for r in requests[:-1])


def test_predict_normalises_the_files_of_one_call_as_one_speaker(speaker_exported,
                                                                tmp_path):
    clips = [np.round(tone(0.45, freq=f, silence_s=0.01) * 32767).astype(np.int16)
             for f in (180, 240, 300)]
    paths = [write_wav(str(tmp_path / f"{i}.wav"), c) for i, c in enumerate(clips)]
    corrupt = str(tmp_path / "corrupt.wav")
    with open(corrupt, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    lite = os.path.join(speaker_exported["tflite"], "float32.tflite")
    loaded = tf.saved_model.load(speaker_exported["saved_model"])
    samples = [c / 32768.0 for c in clips]
    moments = sum(loaded.signatures["speaker_moments"](
        waveform=tf.constant(s[None], tf.float32))["moments"].numpy()[0].astype(np.float64)
        for s in samples).astype(np.float32)
    for model in (speaker_exported["saved_model"], lite):
        result = run_main("--mode=predict", f"--model={model}", *paths, corrupt)
        assert result.returncode == 1, result.stderr[-3000:]
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert "error" in lines[-1]  # the unreadable file is left out of the moments
        for line, s in zip(lines[:3], samples):
            assert line["speaker_files"] == 3
            expected = loaded.signatures["serving_default"](
                waveform=tf.constant(s[None], tf.float32),
                speaker_moments=tf.constant(moments[None]))["probabilities"]
            np.testing.assert_allclose(list(line["probabilities"].values()),
                                       expected.numpy()[0], atol=1e-4)
