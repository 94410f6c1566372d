"""`--mode=export`: the trained classifier -> SavedModel (TF Serving) + TFLite,
checked against the trained model and measured in export_report.json.

Layout (one version per export; 1, 2, ... by default):

  <export_dir>/<model_name>/<version>/            the SavedModel, TF Serving's layout
      saved_model.pb, variables/
      assets/i2a_model.json                       class names, front end, statistics
      assets.extra/tf_serving_warmup_requests     PredictionLog warm-up requests
  <export_dir>/<model_name>_tflite/<version>/
      float32.tflite, dynamic_range.tflite, int8.tflite   (--tflite_variants)
      i2a_model.json, export_report.json

Both folders are written under temporary names (`.tmp-...`, which TF Serving
ignores: version folders are integers) and renamed when complete, the SavedModel
last, so a server polling the base path never sees a half-written version.

Checks before the rename: the warm-up requests run the way TF Serving runs them
(a TF1 session over the SavedModel); the SavedModel reloaded with
`tf.saved_model.load` against the in-memory Keras model on every test clip; and
each TFLite model against the SavedModel (argmax agreement, max abs difference,
UAR) on every test clip. A speaker-normalised model is fed each clip's
speaker's moments (from the statistics training used), and its
`speaker_moments` signature, summed over each test speaker's clips, is checked
against those statistics.
"""

from __future__ import annotations

import json
import math
import logging
import os
import platform
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from i2a_tf.config import Config, ConfigError, check_trained_frontend
from i2a_tf.data import frontend
from i2a_tf.data.dataset_info import DatasetInfo
from i2a_tf.data.pipeline import eval_dataset, speaker_moments, split_clips, sum_moments
from i2a_tf.export import tflite, warmup
from i2a_tf.export.serving import (CLIENT_JSON, SPEAKER_INPUT, SPEAKER_SIGNATURE,
                                   WAVEFORM_SIGNATURE, ServingModule, client_metadata,
                                   existing_versions)
from i2a_tf.models.evaluation import classification_metrics, run_over_split

log = logging.getLogger(__name__)

REPORT_JSON = "export_report.json"
# Issue targets for the int8 model, checked and recorded in the report.
INT8_MAX_BYTES_FRACTION = 0.30
INT8_MAX_UAR_DROP_POINTS = 1.0
INT8_MIN_AGREEMENT = 0.97
INT8_WORSE_P_VALUE = 0.05  # a UAR drop counts only if int8 is worse beyond chance
# --int8_weights=auto compares per-tensor int8 with float on this many
# calibration (training) clips: a choice made without the test split.
AUTO_CHECK_CLIPS = 300
LATENCY_CLIP_SECONDS = 2.0


def choose_version(config: Config) -> int:
    """The version to write: --export_version, or one more than the highest
    under either base path."""
    taken = set(existing_versions(config.saved_model_base)) | set(
        existing_versions(config.tflite_base))
    requested = config.export.export_version
    if requested == 0:
        return max(taken, default=0) + 1
    if requested in taken:
        raise _version_taken(config, requested)
    return requested


def _version_taken(config: Config, version: int) -> ConfigError:
    return ConfigError(
        f"--export_version={version}: version {version} already exists under "
        f"{config.saved_model_base} or {config.tflite_base}; choose another, or 0 "
        "for the next free one")


def _claim_version(config: Config) -> int:
    """Chooses a version and reserves it by creating its (empty) TFLite folder,
    so two exports running at once never write the same version."""
    version = choose_version(config)
    while True:
        try:
            os.mkdir(os.path.join(config.tflite_base, str(version)))
            return version
        except FileExistsError:
            if config.export.export_version:
                raise _version_taken(config, version) from None
            version += 1


def _remove_stale_temporaries(base: str) -> None:
    """Removes `.tmp-<version>-<pid>` folders left by exports that were killed."""
    for name in os.listdir(base):
        parts = name.split("-")
        if len(parts) != 3 or parts[0] != ".tmp" or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            log.info("removing %s, left by an export that did not finish", name)
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except PermissionError:
            pass  # a live process of another user


def _directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def _compare(candidate: np.ndarray, reference: np.ndarray, true_labels: np.ndarray,
             class_names: tuple[str, ...]) -> dict:
    metrics = classification_metrics(true_labels, candidate.argmax(1), class_names)
    right = candidate.argmax(1) == true_labels
    reference_right = reference.argmax(1) == true_labels
    worse, better = int(np.sum(reference_right & ~right)), int(np.sum(right & ~reference_right))
    return {"argmax_agreement": float(np.mean(candidate.argmax(1) == reference.argmax(1))),
            "max_abs_difference": float(np.max(np.abs(candidate - reference))),
            "uar": metrics["uar"],
            # Clips the reference classifies right and this model wrong, and
            # the reverse; with the one-sided exact McNemar p-value of
            # "this model is worse".
            "clips_worse": worse, "clips_better": better,
            "worse_p_value": worse_p_value(worse, better)}


def worse_p_value(worse: int, better: int) -> float:
    """One-sided exact McNemar test: P(X >= worse) for X ~ Binomial(worse +
    better, 1/2), the chance of at least this many changes for the worse if
    changes were equally likely either way. 1.0 when nothing changed."""
    changed = worse + better
    if changed == 0:
        return 1.0
    return float(sum(math.comb(changed, k) for k in range(worse, changed + 1)) / 2 ** changed)


def _mean_ms(call, runs: int, warmup: int = 3) -> float:
    """Mean wall time of `call()` over `runs` calls after `warmup`, in ms."""
    for _ in range(warmup):
        call()
    started = time.perf_counter()
    for _ in range(runs):
        call()
    return (time.perf_counter() - started) / runs * 1000.0


def _latency_clip(clips: list[dict], sample_rate: int) -> np.ndarray:
    """A LATENCY_CLIP_SECONDS clip: the first test clip, tiled or cut to length."""
    return np.resize(clips[0]["waveform"], int(LATENCY_CLIP_SECONDS * sample_rate))


def _keras_probabilities(config: Config, data: DatasetInfo, classifier,
                         order: np.ndarray) -> np.ndarray:
    """The in-memory Keras model on the test split, through the training input
    pipeline (padded batches), rows in `order` of clip index."""
    result = run_over_split(lambda x: tf.nn.softmax(classifier(x, training=False)),
                            eval_dataset(config, "test", data))
    by_index = dict(zip(result["index"].tolist(), result["outputs"]))
    return np.stack([by_index[i] for i in order])


def _speaker_moments(config: Config, data: DatasetInfo) -> dict[str, np.ndarray]:
    """Speaker -> the summed `[1 + 2 * mels]` moments a speaker-normalised
    model is given with that speaker's clips (the sums training used, in
    float32 as a client sends them); {} without speaker normalisation."""
    if config.frontend.speaker_normalisation == "none":
        return {}
    return {name: row.astype(np.float32)
            for name, row in speaker_moments(data, config.frontend).items()}


def _speaker_inputs(moments: dict[str, np.ndarray], clip: dict) -> dict:
    """The extra keyword inputs of `clip` for a served signature: its
    speaker's moments at batch 1, or none."""
    if not moments:
        return {}
    return {SPEAKER_INPUT: tf.constant(moments[clip["speaker"]][None])}


def _speaker_signature_check(loaded, moments: dict[str, np.ndarray], clips: list[dict],
                             centre: np.ndarray) -> dict:
    """The served `speaker_moments` signature, summed over each test speaker's
    clips, against the statistics the training pipeline used for that speaker
    (a test speaker's clips are all in the test split): max |difference| of
    the band means and stds."""
    signature = loaded.signatures[SPEAKER_SIGNATURE]
    sums = sum_moments(
        (clip["speaker"], signature(waveform=tf.constant(clip["waveform"][None]))
         ["moments"].numpy()[0]) for clip in clips)
    worst_mean = worst_std = 0.0
    for speaker, total in sums.items():
        served = frontend.statistics_from_moment_sums(total, centre)
        used = frontend.statistics_from_moment_sums(moments[speaker], centre)
        worst_mean = max(worst_mean, float(np.abs(served.mean - used.mean).max()))
        worst_std = max(worst_std, float(np.abs(served.std - used.std).max()))
    return {"speakers": len(sums), "max_abs_mean_difference": worst_mean,
            "max_abs_std_difference": worst_std}


def _saved_model_entry(config, data, classifier, loaded, directory, clips,
                       latency_clip: np.ndarray, moments: dict) -> tuple:
    serve = loaded.signatures[WAVEFORM_SIGNATURE]
    order = np.array([c["index"] for c in clips])
    served = np.stack([serve(waveform=tf.constant(c["waveform"][None]),
                             **_speaker_inputs(moments, c))
                       ["probabilities"].numpy()[0] for c in clips])
    in_memory = _keras_probabilities(config, data, classifier, order)
    true_labels = np.array([c["true_label"] for c in clips])
    keras_uar = classification_metrics(true_labels, in_memory.argmax(1),
                                       data.classes)["uar"]
    entry = {"path": directory, "bytes": _directory_bytes(directory),
             "keras_uar": keras_uar,
             **{f"{k}_vs_keras" if k != "uar" else k: v for k, v in
                _compare(served, in_memory, true_labels, data.classes).items()}}
    clip = tf.constant(latency_clip[None])
    extra = _speaker_inputs(moments, clips[0])
    entry["latency_ms_per_clip"] = _mean_ms(lambda: serve(waveform=clip, **extra),
                                            config.export.latency_runs)
    if moments:
        entry["speaker_moments_vs_training"] = _speaker_signature_check(
            loaded, moments, clips, data.statistics.mean)
    return entry, served, true_labels


def _calibration_clips(data: DatasetInfo, count: int) -> list[dict]:
    """Calibration clips from the training records: labeled, then unlabeled."""
    clips = split_clips(data, "train_labeled", count)
    if len(clips) < count and data.num_examples("train_unlabeled"):
        clips += split_clips(data, "train_unlabeled", count - len(clips))
    return clips


def _lite_inputs(moments: dict[str, np.ndarray], clip: dict) -> list[np.ndarray]:
    """`lite_function`'s inputs for `clip`, in its argument order, batch 1."""
    inputs = [clip["waveform"][None, :]]
    if moments:
        inputs.append(moments[clip["speaker"]][None])
    return inputs


def _lite_args(moments: dict[str, np.ndarray], clip: dict) -> list[np.ndarray]:
    """`LiteModel.probabilities`' arguments for `clip` (unbatched)."""
    return [x[0] for x in _lite_inputs(moments, clip)]


def _convert(config: Config, lite_function, variant: str, calibration: list[dict],
             metadata: dict, moments: dict) -> tuple[bytes, dict]:
    """One TFLite variant, and what the report records of its settings."""
    if variant != "int8":
        return tflite.finalize(tflite.convert(lite_function, variant), metadata), {}

    def representative():
        for clip in calibration:
            yield _lite_inputs(moments, clip)

    export = config.export
    how = {"int8_weights": export.int8_weights, "int8_frontend": export.int8_frontend}
    if export.int8_weights == "auto":
        model = tflite.convert(lite_function, variant, representative,
                               export.int8_frontend, per_channel=False)
        checked = calibration[:AUTO_CHECK_CLIPS]
        agreement = _agreement_with_float(model, lite_function, checked, moments)
        per_tensor = agreement >= INT8_MIN_AGREEMENT
        how.update(int8_weights="per_tensor" if per_tensor else "per_channel",
                   int8_weights_chosen_by=(
                       f"auto: per-tensor int8 agreed with float on {agreement:.3f} of "
                       f"{len(checked)} calibration clips (needs {INT8_MIN_AGREEMENT})"))
        log.info("int8 weights: %s (%s)", how["int8_weights"], how["int8_weights_chosen_by"])
        if per_tensor:
            return tflite.finalize(model, metadata), how
    model = tflite.convert(lite_function, variant, representative, export.int8_frontend,
                           per_channel=how["int8_weights"] == "per_channel")
    return tflite.finalize(model, metadata), how


def _agreement_with_float(model: bytes, lite_function, clips: list[dict],
                          moments: dict) -> float:
    """Fraction of `clips` whose argmax the TFLite `model` shares with the
    float graph it was converted from."""
    runner = tflite.LiteModel(model, num_threads=1)
    hits = []
    for clip in clips:
        inputs = _lite_inputs(moments, clip)
        lite = runner.probabilities(*_lite_args(moments, clip))
        graph = lite_function(*[tf.constant(x) for x in inputs])["probabilities"]
        hits.append(int(np.argmax(lite)) == int(np.argmax(graph.numpy()[0])))
    return float(np.mean(hits)) if hits else 0.0


def _targets(variants: dict) -> dict:
    """The int8 targets. The UAR drop is a miss only when it is both above 1
    point and a measured change: on a test split of 100 clips one flipped
    clip moves UAR by 1-2 points, which says nothing about quantization. So a
    drop counts when the clips int8 gets wrong (and the SavedModel right)
    outnumber the reverse beyond chance (one-sided exact McNemar, p < 0.05:
    at least 5 to 0, 7 to 1, ...)."""
    int8, float32 = variants.get("int8"), variants.get("float32")
    if int8 is None:
        return {}
    drop = int8["uar_drop_points"]
    targets = {
        "int8_agreement": {"value": int8["argmax_agreement"],
                           "min": INT8_MIN_AGREEMENT,
                           "met": bool(int8["argmax_agreement"] >= INT8_MIN_AGREEMENT)},
        # 1e-9: UARs are sums of fractions; 1.0000000000000009 is one point.
        "int8_uar_drop_points": {
            "value": drop, "max": INT8_MAX_UAR_DROP_POINTS,
            "clips_worse": int8["clips_worse"], "clips_better": int8["clips_better"],
            "worse_p_value": int8["worse_p_value"],
            "met": bool(drop <= INT8_MAX_UAR_DROP_POINTS + 1e-9
                        or int8["worse_p_value"] >= INT8_WORSE_P_VALUE)},
    }
    if float32 is not None:
        fraction = int8["bytes"] / float32["bytes"]
        targets["int8_bytes_fraction_of_float32"] = {
            "value": fraction, "max": INT8_MAX_BYTES_FRACTION,
            "met": bool(fraction <= INT8_MAX_BYTES_FRACTION)}
    return targets


def _load_classifier(config: Config):
    """The trained classifier, checked against the flags' front end."""
    if not os.path.exists(config.classifier_path):
        raise ConfigError(f"--workdir={config.workdir}: no trained classifier at "
                          f"{config.classifier_path}; run --mode=train first")
    check_trained_frontend(config)
    try:
        classifier = keras.saving.load_model(config.classifier_path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--workdir={config.workdir}: cannot load "
                          f"{config.classifier_path}: {error}") from error
    for flag, expected, actual in zip(
            ("num_mels", "num_frames"),
            (config.frontend.num_mels, config.frontend.num_frames),
            tuple(classifier.input_shape[1:])):
        if expected != actual:
            raise ConfigError(f"--{flag}={expected}: {config.classifier_path} was "
                              f"trained with {flag}={actual}")
    return classifier


def export(config: Config) -> dict:
    """Exports `<workdir>/classifier.keras`; returns export_report.json's content."""
    classifier = _load_classifier(config)
    data = DatasetInfo(config)
    if not data.num_examples("test"):
        raise ConfigError(f"--workdir={config.workdir}: the test split is empty, so "
                          "the exported models cannot be checked")
    metadata = client_metadata(data.classes, data.statistics, config.frontend)
    try:
        for base in (config.saved_model_base, config.tflite_base):
            os.makedirs(base, exist_ok=True)
            _remove_stale_temporaries(base)
        version = _claim_version(config)
    except OSError as error:
        raise ConfigError(f"--export_dir={config.export.export_dir or ''}: cannot "
                          f"write there: {error}") from error
    sm_final = os.path.join(config.saved_model_base, str(version))
    lite_final = os.path.join(config.tflite_base, str(version))
    suffix = f".tmp-{version}-{os.getpid()}"
    sm_tmp = os.path.join(config.saved_model_base, suffix)
    lite_tmp = os.path.join(config.tflite_base, suffix)
    done = False
    try:
        report = _write(config, data, classifier, metadata, version, sm_tmp, lite_tmp)
        report["saved_model"]["path"] = sm_final
        for entry in report["tflite"].values():
            entry["path"] = os.path.join(lite_final, os.path.basename(entry["path"]))
        _write_json(os.path.join(lite_tmp, REPORT_JSON), report)
        # Onto the empty reserved folder; the SavedModel last, so a server sees
        # the version only when everything is in place.
        os.rename(lite_tmp, lite_final)
        os.rename(sm_tmp, sm_final)
        done = True
    finally:
        shutil.rmtree(sm_tmp, ignore_errors=True)
        shutil.rmtree(lite_tmp, ignore_errors=True)
        if not done:
            shutil.rmtree(lite_final, ignore_errors=True)
    _log_report(report, os.path.join(lite_final, REPORT_JSON))
    return report


def _write(config, data, classifier, metadata, version, sm_tmp, lite_tmp) -> dict:
    os.makedirs(lite_tmp)
    client_json = os.path.join(lite_tmp, CLIENT_JSON)
    _write_json(client_json, metadata)
    module = ServingModule(classifier, data.classes, data.statistics, config.frontend,
                           client_json=client_json)
    tf.saved_model.save(module, sm_tmp, signatures=module.signatures())
    moments = _speaker_moments(config, data)
    # Warm-up requests carry generated tones; a speaker-normalised model gets
    # the training split's band statistics as their "speaker".
    warmup.write_warmup_requests(
        sm_tmp, config.export.model_name, warmup.warmup_batches(config.frontend),
        frontend.moment_sums_of(data.statistics, data.statistics.mean)
        if moments else None)
    log.info("wrote the SavedModel; checking it on the test split")
    # TF Serving's own loading path first: a TF1 session over the SavedModel.
    warmup.run_warmup_requests(sm_tmp)
    loaded = tf.saved_model.load(sm_tmp)
    clips = split_clips(data, "test")
    latency_clip = _latency_clip(clips, config.frontend.sample_rate)
    saved_entry, served, true_labels = _saved_model_entry(
        config, data, classifier, loaded, sm_tmp, clips, latency_clip, moments)
    calibration = _calibration_clips(data, config.export.representative_clips)
    if not calibration and "int8" in config.export.tflite_variants:
        raise ConfigError(f"--tflite_variants=int8: the training splits in "
                          f"{config.data_dir} hold no clips to calibrate it with")
    lite_function = module.lite_function()
    variants = {}
    for variant in config.export.tflite_variants:
        log.info("converting the %s TFLite model", variant)
        model, how = _convert(config, lite_function, variant, calibration, metadata,
                              moments)
        path = os.path.join(lite_tmp, f"{variant}.tflite")
        with open(path, "wb") as f:
            f.write(model)
        runner = tflite.LiteModel(model, num_threads=1)
        probabilities = np.stack([runner.probabilities(*_lite_args(moments, c))
                                  for c in clips])
        entry = {"path": path, "bytes": len(model), "runtime": runner.runtime, **how,
                 **_compare(probabilities, served, true_labels, data.classes)}
        entry["uar_drop_points"] = 100.0 * (saved_entry["uar"] - entry["uar"])
        latency_inputs = [latency_clip, *_lite_args(moments, clips[0])[1:]]
        entry["latency_ms_per_clip"] = _mean_ms(
            lambda: runner.probabilities(*latency_inputs), config.export.latency_runs)
        variants[variant] = entry
    if "float32" in variants:
        for entry in variants.values():
            entry["bytes_fraction_of_float32"] = entry["bytes"] / variants["float32"]["bytes"]
    return {
        "model_name": config.export.model_name,
        "version": version,
        "classifier": config.classifier_path,
        "class_names": list(data.classes),
        "speaker_normalisation": config.frontend.speaker_normalisation,
        "test_clips": len(clips),
        "comparison": "argmax agreement, max |p - p_ref| and UAR on every test clip, "
                      "whole clips at batch 1; TFLite against the SavedModel, the "
                      "SavedModel against the in-memory Keras model",
        "latency": f"mean of {config.export.latency_runs} runs on a "
                   f"{LATENCY_CLIP_SECONDS:g}-s clip at batch 1; TFLite with the "
                   "LiteRT interpreter on 1 thread",
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "tensorflow": tf.__version__},
        "calibration_clips": len(calibration),
        "saved_model": saved_entry,
        "tflite": variants,
        "targets": _targets(variants),
    }


def _write_json(path: str, content: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, allow_nan=True)
        f.write("\n")


def _log_report(report: dict, path: str) -> None:
    saved = report["saved_model"]
    log.info("SavedModel %s: UAR %.4f (Keras %.4f), agreement with Keras %.3f, "
             "max |diff| %.2e, %.1f ms per clip", saved["path"], saved["uar"],
             saved["keras_uar"], saved["argmax_agreement_vs_keras"],
             saved["max_abs_difference_vs_keras"], saved["latency_ms_per_clip"])
    for name, entry in report["tflite"].items():
        log.info("TFLite %-13s %8d bytes  UAR %.4f  agreement %.3f  max |diff| %.2e  "
                 "%.2f ms per clip", name, entry["bytes"], entry["uar"],
                 entry["argmax_agreement"], entry["max_abs_difference"],
                 entry["latency_ms_per_clip"])
    for name, target in report["targets"].items():
        if not target["met"]:
            log.warning("target missed: %s = %.4f (%s)", name, target["value"],
                        ", ".join(f"{k} {v}" for k, v in target.items()
                                  if k in ("min", "max")))
    log.info("export report -> %s", path)
