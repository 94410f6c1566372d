"""The Image2Audio train step, its distribution, checkpoints and the real `main`."""

from __future__ import annotations

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, TINY_TRAIN, run_main
from training_fixtures import set_tiny_state, tiny_batch, tiny_config, tiny_model

from i2a_tf.training import callbacks as callbacks_lib
from i2a_tf.training import trainer as trainer_lib
from i2a_tf.models.evaluation import classification_metrics

TESTS = os.path.dirname(os.path.abspath(__file__))


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def test_train_step_updates_every_variable_group():
    # Non-saturating: under the hinge loss the bias of psi gets exactly zero
    # gradient while every real and translated score is inside the margin.
    model = tiny_model(tiny_config(adversarial_loss="non_saturating"))
    set_tiny_state(model)
    groups = {"classifier": model.classifier.trainable_variables,
              "face_encoder": model.face_encoder.trainable_variables,
              "generator": model.generator.trainable_variables,
              "discriminator": model.discriminator.trainable_variables}
    before = {name: _values(variables) for name, variables in groups.items()}
    logs = model.train_step(tiny_batch())
    assert set(logs) == {m.name for m in model.metrics}
    for name, variables in groups.items():
        unchanged = [v.path for v, old in zip(variables, before[name])
                     if np.array_equal(old, v.numpy())]
        assert not unchanged, f"{name}: not updated: {unchanged}"
    logs = {k: float(v) for k, v in logs.items()}
    assert all(math.isfinite(v) for v in logs.values()), logs
    for term in ("c_labeled_loss", "c_unlabeled_loss", "c_translated_loss", "d_loss",
                 "g_adversarial_loss", "g_class_loss", "r1_penalty"):
        assert logs[term] != 0.0, term
    assert 0.0 < logs["mean_density_weight"] <= 1.0
    assert logs["pseudo_labeled_fraction"] == 1.0
    # Epoch 1 of a 2-epoch run with no warm-up: tau = 1 - (1 - 0.2) * 1.
    assert logs["annealing_threshold"] == pytest.approx(0.2)


def test_supervised_only_step_trains_the_classifier_alone():
    model = tiny_model(tiny_config(use_translation=False, use_pseudo_labels=False))
    assert not hasattr(model, "generator")
    before = _values(model.classifier.trainable_variables)
    batch = {k: v for k, v in tiny_batch().items() if k.startswith("labeled")}
    logs = model.train_step(batch)
    after = _values(model.classifier.trainable_variables)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    # Only the computed terms are tracked: no zeros for switched-off ones.
    assert set(logs) == {"c_loss", "c_labeled_loss", "labeled_accuracy", "loss"}
    assert {m.name for m in model.metrics} == set(logs)


def test_warm_up_gates_the_semi_supervised_terms():
    """Before warm-up ends the pseudo-labeled and translated terms weigh 0."""
    model = tiny_model(tiny_config(warmup_epochs=1))
    set_tiny_state(model)
    model.epoch.assign(0.0)
    logs = {k: float(v) for k, v in model.train_step(tiny_batch()).items()}
    assert logs["c_loss"] == pytest.approx(logs["c_labeled_loss"], rel=1e-6)
    assert logs["c_unlabeled_loss"] > 0  # computed and logged, but not weighted in
    # G's loss is adversarial only: the class-consistency term is gated too.
    assert logs["g_class_loss"] > 0
    assert logs["loss"] == pytest.approx(
        logs["c_loss"] + logs["g_adversarial_loss"] + logs["d_loss"], rel=1e-5)


def test_density_weights_and_annealing_switches():
    model = tiny_model(tiny_config(use_density_weights=False))
    set_tiny_state(model)
    logs = {k: float(v) for k, v in model.train_step(tiny_batch()).items()}
    assert logs["mean_density_weight"] == 1.0 and logs["admitted_fraction"] == 1.0
    assert "annealing_threshold" not in logs  # no density weights, no threshold
    assert "reliable_fraction" not in logs and "dense_fraction" not in logs
    model = tiny_model(tiny_config(use_annealing=False, tau_min=0.3))
    set_tiny_state(model)
    logs = {k: float(v) for k, v in model.train_step(tiny_batch()).items()}
    assert logs["annealing_threshold"] == pytest.approx(0.3)  # tau_min throughout
    assert 0.0 < logs["mean_density_weight"] < 1.0


def test_density_gate_parts_are_logged():
    """admitted (w >= 1/2) is reliable (r >= rho) and dense (q >= tau): with
    rho = 0 every sample is reliable and admitted is the dense share; with a
    higher rho, admitted is at most either share."""
    model = tiny_model(tiny_config())  # min_reliability 0, judge off
    set_tiny_state(model)
    logs = {k: float(v) for k, v in model.train_step(tiny_batch()).items()}
    assert logs["reliable_fraction"] == 1.0
    assert 0.0 <= logs["dense_fraction"] <= 1.0
    assert logs["admitted_fraction"] == pytest.approx(logs["dense_fraction"])
    # Four translations a batch: each share is a multiple of 1/4.
    assert logs["dense_fraction"] * 4 == pytest.approx(round(logs["dense_fraction"] * 4))
    model = tiny_model(tiny_config(min_reliability=0.6))
    set_tiny_state(model)
    logs = {k: float(v) for k, v in model.train_step(tiny_batch()).items()}
    assert logs["admitted_fraction"] <= min(logs["reliable_fraction"],
                                            logs["dense_fraction"]) + 1e-6


def test_xla_compiled_fit_step():
    """--jit_compile under the default strategy: fit runs the XLA-compiled step."""
    model = tiny_model(tiny_config(jit_compile=True))
    set_tiny_state(model)
    before = _values(model.classifier.trainable_variables)
    dataset = tf.data.Dataset.from_tensors(tiny_batch()).repeat()
    history = model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    assert math.isfinite(history.history["loss"][-1])
    after = _values(model.classifier.trainable_variables)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))


def test_mixed_precision_step_runs_in_float16():
    """The GPU setting, exercised on CPU: float16 compute, float32 losses,
    dynamic loss scaling."""
    import keras
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model(tiny_config())
        assert isinstance(model.classifier_optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.generator(
            [tf.zeros([1, 8]), tf.constant([0]), tf.zeros([1, 3])]).dtype == tf.float16
        set_tiny_state(model)
        before = _values(model.classifier.trainable_variables)
        # A step whose scaled gradients overflow is skipped and the scale
        # halved, so the first steps may leave the weights as they were.
        for _ in range(20):
            logs = {k: float(v) for k, v in model.train_step(tiny_batch()).items()}
            assert all(math.isfinite(v) for v in logs.values()), logs
            after = _values(model.classifier.trainable_variables)
            if any(not np.array_equal(a, b) for a, b in zip(before, after)):
                break
        else:
            pytest.fail("20 mixed-precision steps never updated the classifier")
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _distributed_step(num_devices, init, out):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, os.path.join(TESTS, "distributed_step.py"), str(num_devices),
         init, out], env=env, capture_output=True, text=True, timeout=600, cwd=TESTS)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


def test_one_step_on_one_and_two_devices_gives_the_same_update(tmp_path):
    init = str(tmp_path / "init.weights.h5")
    one = _distributed_step(1, init, str(tmp_path / "one.npz"))
    two = _distributed_step(2, init, str(tmp_path / "two.npz"))
    assert set(one) == set(two)
    variables = [k for k in one if k.startswith("var:")]
    assert len(variables) > 40
    for key in sorted(one):
        np.testing.assert_allclose(two[key], one[key], rtol=2e-4, atol=2e-5,
                                   err_msg=key)
    # The step did move the weights (the comparison is not between two no-ops).
    with_init = tiny_model(tiny_config())
    with_init.load_weights(init)
    kernel = with_init.classifier.get_layer("logits").kernel
    assert not np.allclose(one[f"var:{kernel.path}"], kernel.numpy())


def test_backup_skips_non_finite_epochs(tmp_path):
    import keras
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    restored_calls = []
    backup = callbacks_lib.FiniteBackupAndRestore(
        str(tmp_path / "backup"), on_restore=lambda: restored_calls.append(1))
    backup.set_model(model)
    backup.on_train_begin()
    assert restored_calls == [1]
    backup.on_epoch_end(0, {"loss": 1.0, "pseudo_label_accuracy": float("nan")})
    saved = model.get_weights()
    model.set_weights([w + 1 for w in saved])
    backup.on_epoch_end(1, {"loss": float("nan")})
    assert backup.diverged_at == 1
    with open(tmp_path / "backup" / "training_metadata.json") as f:
        assert json.load(f)["epoch"] == 1  # epoch 0 done; epoch 1 not recorded
    restored = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    restored.load_weights(str(tmp_path / "backup" / "latest.weights.h5"))
    for a, b in zip(restored.get_weights(), saved):
        np.testing.assert_array_equal(a, b)


def test_classification_metrics_by_hand():
    true = np.array([0, 0, 0, 1, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2])
    m = classification_metrics(true, predicted, ("a", "b", "c", "d"))
    assert m["per_class_recall"] == {"a": 2 / 3, "b": 1.0, "c": 0.5, "d": None}
    assert m["uar"] == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)
    assert m["wa"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"][0] == [2, 1, 0, 0]
    assert m["num_test_clips"] == 6
    # F1: a: p 2/3 r 2/3; b: p 1/2 r 1; c: p 1 r 1/2.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3) / 3)


@pytest.mark.parametrize("variant", [(), ("--strategy=mirrored", "--num_cpu_devices=2",
                                          # The speaker lookup inside the
                                          # input pipeline of every replica,
                                          # and the transductive unlabeled pool.
                                          "--speaker_normalisation=mean_std",
                                          "--unlabeled_test_clips"),
                                     # The approximate kNN graph in a real run: ~30
                                     # training clips in 4 lists of 7-8, 2 probed.
                                     ("--val_speaker_fraction=0.4", "--knn_method=approximate",
                                      "--knn_k=4", "--knn_list_size=5", "--knn_probes=2")],
                         ids=["default", "mirrored_speaker_normalised_transductive",
                              "validation_approximate_knn"])
def test_main_demo_prepare_train_evaluate(tmp_path, variant):
    workdir = str(tmp_path / "run")
    args = ("--flagfile=configs/demo.cfg", "--mode=prepare,train,evaluate",
            f"--workdir={workdir}", *TINY_TRAIN,
            "--epochs=3", "--warmup_epochs=1", "--steps_per_epoch=2",
            "--pseudo_label_every=1", *variant)
    result = run_main(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    for key in ("uar", "wa", "macro_f1", "per_class_recall", "confusion_matrix",
                "class_names", "num_test_clips", "switches"):
        assert key in metrics
    assert metrics["class_names"] == ["anger", "disgust", "fear", "happiness", "sadness"]
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["num_test_clips"] > 0
    assert metrics["switches"]["use_translation"] is True
    assert os.path.exists(os.path.join(workdir, "classifier.keras"))
    assert not os.path.exists(os.path.join(workdir, "backup"))
    with open(os.path.join(workdir, "pseudo_labels.json")) as f:
        refreshes = json.load(f)
    assert [r["epoch"] for r in refreshes] == [1, 2]
    with open(glob.glob(os.path.join(workdir, "**", "dataset.json"), recursive=True)[0]) as f:
        splits = json.load(f)["splits"]
    pool = splits["train_unlabeled"]["num_examples"]
    if "--unlabeled_test_clips" in variant:  # the test clips are pseudo-label slots too
        pool += splits["test"]["num_examples"]
    assert all(r["num_unlabeled"] == pool for r in refreshes)
    # Each refresh reports plain self-training's precision at the same coverage.
    assert all(0 <= r["self_training_accuracy"] <= 1 or math.isnan(r["self_training_accuracy"])
               for r in refreshes)
    assert glob.glob(os.path.join(workdir, "logs", "run-001", "train", "events.*"))
    assert glob.glob(os.path.join(workdir, "logs", "run-001", "images", "events.*"))
    with open(os.path.join(workdir, "history.json")) as f:
        history = json.load(f)["logs"]
    # One line per epoch on the console, with the evaluation's number.
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("Epoch ")]
    assert len(epoch_lines) == 3 and "test UAR" in epoch_lines[-1], result.stdout
    assert max(map(len, epoch_lines)) < 200
    best = os.path.join(workdir, "best.json")
    if "--val_speaker_fraction=0.4" in variant:
        # The classifier of the best validation epoch is the one saved.
        with open(best) as f:
            assert 0 <= json.load(f)["epoch"] < 3
    else:
        assert not os.path.exists(best)
        # The per-epoch evaluation scores the weights that are saved (the EMA):
        # TensorBoard's last test UAR is metrics.json's.
        assert history["test_uar"][-1] == pytest.approx(metrics["uar"], abs=1e-9)
    if not variant:
        # --mode=evaluate alone re-scores the saved classifier identically.
        again = run_main(*args, "--mode=evaluate")
        assert again.returncode == 0, again.stderr[-3000:]
        with open(os.path.join(workdir, "metrics.json")) as f:
            assert json.load(f)["confusion_matrix"] == metrics["confusion_matrix"]
        # (That a second training run gives the same numbers in a fresh process
        # is tested on a study cell: test_study.py, "a cell rerun in a fresh
        # process"; that it logs into a run folder of its own, by
        # test_each_training_run_logs_into_a_folder_of_its_own.)


def test_each_training_run_logs_into_a_folder_of_its_own(tmp_path):
    workdir = str(tmp_path)
    logs = os.path.join(workdir, "logs")
    first = trainer_lib.tensorboard_run_dir(workdir, resuming=False)
    assert first == os.path.join(logs, "run-001")
    # A resumed run continues the folder named in logs/active_run ...
    assert trainer_lib.tensorboard_run_dir(workdir, resuming=True) == first
    os.makedirs(first)
    # ... a new run takes the next number after the highest, gaps kept.
    os.makedirs(os.path.join(logs, "run-007"))
    os.makedirs(os.path.join(logs, "run-x"))  # not a run folder: ignored
    assert trainer_lib.tensorboard_run_dir(workdir, resuming=False) == \
        os.path.join(logs, "run-008")
    with open(os.path.join(logs, "active_run"), encoding="utf-8") as f:
        assert f.read() == "run-008\n"
    assert trainer_lib.tensorboard_run_dir(workdir, resuming=True) == \
        os.path.join(logs, "run-008")


def test_main_adaptive_warmup_starts_the_full_objective_when_c_fits(tmp_path):
    """--warmup_labeled_accuracy in a real run: every epoch that pushed the
    warm-up back had labeled accuracy below the threshold, the auxiliary
    weight is 0 exactly until the recorded end, and the first pseudo-label
    refresh is at it."""
    workdir = str(tmp_path / "run")
    result = run_main("--flagfile=configs/demo.cfg", "--mode=prepare,train,evaluate",
                      f"--workdir={workdir}", *TINY_TRAIN, "--epochs=4",
                      "--warmup_epochs=1", "--steps_per_epoch=2", "--pseudo_label_every=1",
                      "--warmup_labeled_accuracy=1.0", "--warmup_max_epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "history.json")) as f:
        logs = json.load(f)["logs"]
    ends = [int(e) for e in logs["warmup_end"]]
    expected = 1  # --warmup_epochs, pushed back while accuracy < 1.0, up to 3
    for epoch, accuracy in enumerate(logs["labeled_accuracy"]):
        if epoch + 1 == expected and accuracy < 1.0 and expected < 3:
            expected += 1
        assert ends[epoch] == expected, (ends, logs["labeled_accuracy"])
    end = ends[-1]
    assert end > 1  # this tiny C is far from 1.0: the warm-up was pushed back
    assert all(w == 0 for w in logs["aux_weight"][:end])
    assert all(w > 0 for w in logs["aux_weight"][end:])
    with open(os.path.join(workdir, "pseudo_labels.json")) as f:
        assert [r["epoch"] for r in json.load(f)][0] == end
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["warmup_end"] == end
    assert metrics["switches"]["warmup_labeled_accuracy"] == 1.0


def test_resume_needs_the_adaptive_warmup_as_started(tmp_path):
    """The adaptive warm-up adds a weight to the checkpoint: resuming with it
    switched is a ConfigError naming the flag, not Keras' load error."""
    from i2a_tf.config import ConfigError, config_from_flat
    on = config_from_flat({"warmup_labeled_accuracy": 0.9, "warmup_epochs": 2})
    off = config_from_flat({"warmup_epochs": 2})
    started = str(tmp_path / "on")
    trainer_lib._check_adaptive_warmup(on, started, resuming=False)
    trainer_lib._check_adaptive_warmup(on, started, resuming=True)
    with pytest.raises(ConfigError, match="--warmup_labeled_accuracy=0: .* adaptive "
                                          "warm-up on; resume with it on"):
        trainer_lib._check_adaptive_warmup(off, started, resuming=True)
    # A checkpoint from before the flag existed (no warmup.json) had it off.
    older = str(tmp_path / "older")
    os.makedirs(older)
    trainer_lib._check_adaptive_warmup(off, older, resuming=True)
    with pytest.raises(ConfigError, match="--warmup_labeled_accuracy=0.9: .* off"):
        trainer_lib._check_adaptive_warmup(on, older, resuming=True)


def test_evaluate_without_a_trained_classifier_names_the_fix(tmp_path):
    result = run_main("--flagfile=configs/demo.cfg", "--mode=evaluate",
                      f"--workdir={tmp_path}")
    assert result.returncode == 2
    assert "run --mode=train first" in result.stderr


def test_killed_training_resumes_at_the_interrupted_epoch(tmp_path):
    workdir = str(tmp_path / "run")
    args = ("--flagfile=configs/demo.cfg", f"--workdir={workdir}", *TINY_TRAIN,
            "--epochs=6", "--warmup_epochs=1", "--steps_per_epoch=3", "--verbose=2")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    metadata = os.path.join(workdir, "backup", "training_metadata.json")
    # Prepared in the process that is killed (one TensorFlow start-up less).
    process = subprocess.Popen(
        [sys.executable, "-m", "i2a_tf.main", *args, "--mode=prepare,train"], cwd=REPO_ROOT,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not os.path.exists(metadata) and process.poll() is None:
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training ended before it was killed"
    with open(metadata) as f:
        done = json.load(f)["epoch"]
    assert 1 <= done < 6
    resumed = run_main(*args, "--mode=train")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [line for line in (resumed.stdout + resumed.stderr).splitlines()
              if line.startswith("Epoch ")]
    # Keras numbers epochs from 1: the first epoch run after resuming is done + 1.
    assert epochs[0].startswith(f"Epoch {done + 1}/6"), epochs
    assert epochs[-1].startswith("Epoch 6/6")
    assert os.path.exists(os.path.join(workdir, "metrics.json"))
    # The resumed run continued the killed run's TensorBoard folder.
    assert sorted(os.listdir(os.path.join(workdir, "logs"))) == ["active_run", "run-001"]
    with open(os.path.join(workdir, "history.json")) as f:
        history = json.load(f)
    # Weights and optimizer state came back: the step count spans both runs.
    assert history["epochs"] == list(range(done + 1, 7))
    assert history["classifier_steps"] == 6 * 3
    # The pseudo-label history of the killed run is kept (refreshes at 1, 3, 5).
    with open(os.path.join(workdir, "pseudo_labels.json")) as f:
        assert [r["epoch"] for r in json.load(f)] == [1, 3, 5]


def test_class_balance_factors_equalise_pseudo_classes():
    pseudo = np.array([0, 0, 0, 1, 2, 2, -1])
    collected = np.array([True, True, True, True, False, False, False])
    factors = callbacks_lib.class_balance_factors(pseudo, collected, 3)
    # 4 collected over 2 present classes: class 0 (3 clips) 4/6, class 1 (1) 2.
    np.testing.assert_allclose(factors, [2 / 3, 2 / 3, 2 / 3, 2.0, 1, 1, 1])
    assert factors[:3].sum() == pytest.approx(factors[3])


def test_translated_normalizers():
    """weight_sum: Σ w CE / Σ w; batch: Σ w CE / M. Same model and batch, so
    c_weight_sum = c_batch / mean(w)."""
    import keras
    results = {}
    for normalizer in ("weight_sum", "batch"):
        keras.utils.set_random_seed(0)
        model = tiny_model(tiny_config(translated_normalizer=normalizer))
        set_tiny_state(model)
        results[normalizer] = {k: float(v) for k, v in model.train_step(tiny_batch()).items()}
    mean_weight = results["batch"]["mean_density_weight"]
    assert 0 < mean_weight < 1
    assert results["weight_sum"]["mean_density_weight"] == pytest.approx(mean_weight)
    assert results["weight_sum"]["c_translated_loss"] == pytest.approx(
        results["batch"]["c_translated_loss"] / mean_weight, rel=1e-4)


def test_resuming_with_another_unlabeled_pool_is_a_config_error(tmp_path):
    import dataclasses

    from conftest import make_folder_corpora, small_config
    from i2a_tf.config import ConfigError
    from i2a_tf.data.dataset_info import DatasetInfo
    from i2a_tf.data.prepare import prepare
    from i2a_tf.training import trainer

    speech, faces = make_folder_corpora(str(tmp_path / "corpora"), clips_per_class=1)
    config = small_config(str(tmp_path / "work"), speech, faces)
    prepare(config)
    data = DatasetInfo(config)
    out = str(tmp_path / "out")
    trainer._check_unlabeled_pool(config, data, out, resuming=False)  # records the pool
    trainer._check_unlabeled_pool(config, data, out, resuming=True)   # the same: fine
    transductive = dataclasses.replace(
        config, input=dataclasses.replace(config.input, unlabeled_test_clips=True))
    with pytest.raises(ConfigError) as error:
        trainer._check_unlabeled_pool(transductive, data, out, resuming=True)
    message = str(error.value)
    assert message.startswith("--unlabeled_test_clips=True, --unlabeled_train_clips=True: "
                              "the checkpoint in ")
    pool = data.num_examples("train_unlabeled")
    assert (f"pool of {pool} clips (train_unlabeled), this run's is "
            f"{pool + data.num_examples('test')} (train_unlabeled, test)") in message
