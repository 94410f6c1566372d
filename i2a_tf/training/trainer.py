"""`--mode=train` and `--mode=evaluate`: the run around the Image2Audio model.

train: seeds -> strategy -> model and three optimizers in scope -> `fit` with
the state-refreshing callbacks, checkpoints (resumed after a kill), TensorBoard
logs -> the selected classifier C saved as `<workdir>/classifier.keras` ->
evaluate. evaluate: C on the test speakers -> `<workdir>/metrics.json`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from i2a_tf.config import Config, ConfigError, check_trained_frontend, config_from_dict
from i2a_tf.data.dataset_info import DatasetInfo
from i2a_tf.data.pipeline import (eval_dataset, face_dataset, make_train_input_fn,
                                   unlabeled_dataset, unlabeled_pool, unlabeled_pool_size)
from i2a_tf.training import callbacks as callbacks_lib
from i2a_tf.training import multi_worker
from i2a_tf.training.distribution import (distribute_train_input, make_strategy,
                                          set_precision_policy)
from i2a_tf.models.evaluation import class_predictor, split_metrics
from i2a_tf.training.image2audio import Image2Audio

log = logging.getLogger("i2a_tf.training")


class TrainingError(RuntimeError):
    """Training could not finish (e.g. it diverged); the message says where
    the last good checkpoint is."""


def backup_dir(workdir: str) -> str:
    """The checkpoint `FiniteBackupAndRestore` keeps in a run's folder."""
    return os.path.join(workdir, "backup")


def build_model(config: Config, *, num_classes: int, face_size: int,
                num_unlabeled: int, bank_size: int) -> Image2Audio:
    """The model with its three optimizers compiled in; call inside the
    strategy scope. Sizes as `Image2Audio` takes them."""
    train = config.train
    model = Image2Audio(config, num_classes=num_classes, face_size=face_size,
                        num_unlabeled=num_unlabeled, bank_size=bank_size)
    gan = dict(beta_1=train.gan_beta_1, beta_2=0.999)
    optimizers = [
        keras.optimizers.AdamW(classifier_learning_rate(config),
                               weight_decay=train.weight_decay,
                               use_ema=train.ema_momentum > 0,
                               ema_momentum=train.ema_momentum or 0.99),
        keras.optimizers.Adam(train.generator_lr, **gan),
        keras.optimizers.Adam(train.discriminator_lr, **gan)]
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        # Dynamic loss scaling against float16 gradient underflow.
        optimizers = [keras.optimizers.LossScaleOptimizer(o) for o in optimizers]
    model.compile(*optimizers, jit_compile=train.jit_compile)
    return model


def classifier_learning_rate(config: Config):
    """C's learning rate: `classifier_lr`, or with `--lr_schedule=cosine` a
    schedule from it to 0 over the run's steps (a function of the optimizer's
    step count, so a resumed run continues where it stopped)."""
    train = config.train
    if train.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            train.classifier_lr, decay_steps=train.epochs * train.steps_per_epoch)
    return train.classifier_lr


def reset_learning_rates(model: Image2Audio, config: Config) -> None:
    """Sets the optimizers' learning rates from `config`. A restored checkpoint
    carries the rates it was saved with; a resumed run uses the flags'."""
    train = config.train
    model.classifier_optimizer.learning_rate = classifier_learning_rate(config)
    if model.use_translation:
        model.generator_optimizer.learning_rate = train.generator_lr
        model.discriminator_optimizer.learning_rate = train.discriminator_lr


def _optional_split(config: Config, data: DatasetInfo, split: str):
    return eval_dataset(config, split, data) if data.num_examples(split) else None


def _faces_per_class(config: Config, data: DatasetInfo, per_class: int = 1):
    """The first `per_class` faces of each class, class by class: (images
    `[C * per_class, S, S, 1]`, labels), or None when a class has fewer."""
    batch = next(iter(face_dataset(data, config, training=False, batch_size=4096)))
    images, labels = batch["image"].numpy(), batch["label"].numpy()
    chosen = [np.flatnonzero(labels == c)[:per_class] for c in range(len(data.classes))]
    if any(len(c) < per_class for c in chosen):
        return None
    index = np.concatenate(chosen)
    return images[index], labels[index].astype(np.int32)


TRANSLATIONS_PER_CLASS = 4


def _write_translations(config: Config, model: Image2Audio, data: DatasetInfo,
                        output_dir: str) -> None:
    """`<output_dir>/translations.npz`, to look at and listen to what G learned:

      translated  [C, n, mels, T] float32, G(E(face), c, z) of the first n faces
                  of each class (z drawn with the run's seed), normalised log-mel
      real        [C, n, mels, T] float32, centre crops of labeled training
                  clips of each class (NaN rows where a class has fewer)
      class_names [C] str; band_mean, band_std [mels] float32 (to undo the
                  normalisation)
    """
    n = TRANSLATIONS_PER_CLASS
    faces = _faces_per_class(config, data, n)
    if faces is None:
        log.info("translations.npz not written: a class has fewer than %d faces", n)
        return
    images, labels = faces
    inputs = [model.face_encoder(images, training=False), tf.constant(labels)]
    if config.model.noise_dim:
        inputs.append(tf.random.stateless_normal(
            [len(labels), config.model.noise_dim], [config.training_seed, 7]))
    translated = model.generator(inputs, training=False).numpy()
    num_classes, shape = len(data.classes), translated.shape[1:]
    real = np.full((num_classes, n, *shape), np.nan, np.float32)
    filled = np.zeros(num_classes, np.int64)
    for batch in eval_dataset(config, "train_labeled", data):
        for logmel, label in zip(batch["logmel"].numpy(), batch["true_label"].numpy()):
            if filled[label] < n:
                real[label, filled[label]] = logmel
                filled[label] += 1
    np.savez_compressed(
        os.path.join(output_dir, "translations.npz"),
        translated=translated.reshape(num_classes, n, *shape).astype(np.float32),
        real=real, class_names=np.asarray(data.classes),
        band_mean=data.statistics.mean, band_std=data.statistics.std)


def train(config: Config) -> dict:
    """Trains, saves the selected classifier and returns the test metrics.

    Under `--strategy=multi_worker` every worker runs this; only the chief
    writes into the workdir (and evaluates), each other worker writes into a
    temporary folder removed at the end, and returns {}.
    """
    keras.utils.set_random_seed(config.training_seed)
    data = DatasetInfo(config)
    if not data.num_examples("train_labeled"):
        raise ConfigError(f"--label_fraction={config.data.label_fraction}: the "
                          "train_labeled split is empty")
    task = (multi_worker.worker_task_from_env()
            if config.train.strategy == "multi_worker" else None)
    output_dir = multi_worker.worker_output_dir(config.workdir, task)
    if output_dir != config.workdir:
        multi_worker.start_worker_dir(output_dir, backup_dir(config.workdir), "backup")
    try:
        return _train(config, data, task, output_dir)
    finally:
        if output_dir != config.workdir:
            shutil.rmtree(output_dir, ignore_errors=True)


def _train(config: Config, data: DatasetInfo, task, output_dir: str) -> dict:
    """`train` writing into `output_dir`; `task` is the multi-worker task or None."""
    resuming = os.path.isdir(backup_dir(output_dir))
    if not resuming:
        # A fresh run (nothing to resume): drop what an earlier run selected.
        for name in ("best.json", "best.weights.h5", "pseudo_labels.json",
                     "translations.npz"):
            path = os.path.join(output_dir, name)
            if os.path.exists(path):
                os.remove(path)
    _check_unlabeled_pool(config, data, output_dir, resuming)
    _check_adaptive_warmup(config, output_dir, resuming)
    set_precision_policy(config.train)
    strategy = make_strategy(config.train)
    replicas = strategy.num_replicas_in_sync
    for name in ("labeled_batch_size", "unlabeled_batch_size", "face_batch_size"):
        if getattr(config.input, name) % replicas:
            raise ConfigError(
                f"--{name}={getattr(config.input, name)}: must be a multiple of the "
                f"{replicas} replicas of --strategy={config.train.strategy}")
    with strategy.scope():
        model = build_model(
            config, num_classes=len(data.classes), face_size=data.face_size,
            num_unlabeled=unlabeled_pool_size(data, config),
            bank_size=data.num_examples("train_labeled"))
    dataset = distribute_train_input(strategy, config.train, make_train_input_fn(config))

    labeled = eval_dataset(config, "train_labeled", data)
    unlabeled = (unlabeled_dataset(data, config, training=False,
                                   batch_size=config.input.eval_batch_size)
                 if unlabeled_pool(data, config) else None)
    log_dir = tensorboard_run_dir(output_dir, resuming)
    backup = callbacks_lib.FiniteBackupAndRestore(
        backup_dir(output_dir), on_restore=lambda: reset_learning_rates(model, config))
    run_callbacks = [callbacks_lib.EpochClock()]
    if config.train.warmup_labeled_accuracy > 0:
        # Before the checkpoint's callback, which then saves the decided end.
        run_callbacks.append(callbacks_lib.AdaptiveWarmup(
            config.train.warmup_labeled_accuracy))
    if config.loss.use_translation and config.loss.use_translation_judge:
        run_callbacks.append(callbacks_lib.JudgeSnapshot())
    if config.loss.use_translation and config.loss.use_density_weights:
        run_callbacks.append(callbacks_lib.ClassBankRefresh(labeled))
    if config.graph.use_pseudo_labels and unlabeled is not None:
        run_callbacks.append(callbacks_lib.PseudoLabelRefresh(
            config, labeled, unlabeled, output_dir=output_dir))
    run_callbacks += [
        callbacks_lib.EpochEvaluation(
            config, _optional_split(config, data, "val"),
            _optional_split(config, data, "test"),
            _faces_per_class(config, data) if config.loss.use_translation else None,
            os.path.join(log_dir, "images"), output_dir=output_dir),
        # After the evaluation, so an epoch is checkpointed only once its
        # best-model files are written.
        backup,
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0),
    ]
    verbose = _verbosity(config) if task is None or task.is_chief else 0
    if verbose:
        # After the evaluation and the refreshes, whose numbers it prints.
        run_callbacks.insert(run_callbacks.index(backup), callbacks_lib.ConsoleProgress(
            config.train.epochs, config.train.steps_per_epoch, bar=verbose == 1))
    started = time.time()
    if not config.train.uses_custom_loop:
        history = model.fit(dataset, epochs=config.train.epochs,
                            steps_per_epoch=config.train.steps_per_epoch,
                            callbacks=run_callbacks, verbose=0,
                            shuffle=False)  # the input pipeline shuffles
    else:
        try:
            history = multi_worker.fit_with_loop(
                model, strategy, dataset, epochs=config.train.epochs,
                steps_per_epoch=config.train.steps_per_epoch, callbacks=run_callbacks,
                state_variables=model.weights, worker=task.name if task else "")
        except multi_worker.WorkersDisagreeError as error:
            raise TrainingError(f"{error}; the chief's last checkpoint is in "
                                f"{backup_dir(config.workdir)}") from error
    if backup.diverged_at is not None:
        where = (f"the last good checkpoint is in {backup_dir(config.workdir)} (lower "
                 "the learning rates and re-run to resume from it)"
                 if os.path.isdir(backup_dir(output_dir))
                 else "no epoch finished, so there is no checkpoint to resume from")
        raise TrainingError(f"training diverged (non-finite loss) in epoch "
                            f"{backup.diverged_at + 1}; {where}")
    log.info("trained %d epochs in %.0f s", len(history.epoch), time.time() - started)
    _write_history(output_dir, model, history)

    best_json = os.path.join(output_dir, "best.json")
    if not os.path.exists(best_json):
        # No validation selection: keep the weight average (when on).
        model.classifier_optimizer.finalize_variable_values(
            model.classifier.trainable_variables)
    else:
        model.classifier.load_weights(os.path.join(output_dir, "best.weights.h5"))
        with open(best_json, encoding="utf-8") as f:
            log.info("selected the classifier of epoch %d by validation UAR",
                     json.load(f)["epoch"])
    model.classifier.save(os.path.join(output_dir, "classifier.keras"))
    if config.loss.use_translation:
        _write_translations(config, model, data, output_dir)
    shutil.rmtree(backup_dir(output_dir), ignore_errors=True)
    if task is not None:
        # The chief stays up until every worker has saved: a worker still
        # talking to the cluster otherwise waits out the heartbeat timeout
        # (~40 s measured) once the chief has exited.
        multi_worker.barrier(strategy)
    if output_dir != config.workdir:
        log.info("worker %s done; the chief writes the run's outputs", task.name)
        return {}
    return evaluate(config)


def tensorboard_run_dir(workdir: str, resuming: bool) -> str:
    """`<workdir>/logs/run-NNN`: each training run logs into a folder of its
    own (TensorBoard shows runs side by side instead of joining them into one
    line); a resumed run continues the folder of the run it resumes, named in
    `logs/active_run`."""
    logs = os.path.join(workdir, "logs")
    marker = os.path.join(logs, "active_run")
    if resuming and os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            return os.path.join(logs, f.read().strip())
    os.makedirs(logs, exist_ok=True)
    numbers = [int(match.group(1)) for match in
               (re.fullmatch(r"run-(\d+)", name) for name in os.listdir(logs)) if match]
    name = f"run-{max(numbers, default=0) + 1:03d}"
    with open(marker, "w", encoding="utf-8") as f:
        f.write(name + "\n")
    return os.path.join(logs, name)


def _verbosity(config: Config) -> int:
    if config.train.verbose >= 0:
        return config.train.verbose
    return 1 if sys.stdout.isatty() else 2


POOL_JSON = "unlabeled_pool.json"
WARMUP_JSON = "warmup.json"


def _check_adaptive_warmup(config: Config, output_dir: str, resuming: bool) -> None:
    """--warmup_labeled_accuracy adds a weight to the model, so a checkpoint
    resumes only with the flag on or off as the run started (a fresh run
    records it in `<output_dir>/warmup.json`; a run without the file started
    before the flag existed, so with it off)."""
    adaptive = config.train.warmup_labeled_accuracy > 0
    path = os.path.join(output_dir, WARMUP_JSON)
    if resuming:
        started = False
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                started = json.load(f)["adaptive"]
        if started != adaptive:
            raise ConfigError(
                f"--warmup_labeled_accuracy={config.train.warmup_labeled_accuracy:g}: the "
                f"checkpoint in {backup_dir(output_dir)} was trained with the adaptive "
                f"warm-up {'on' if started else 'off'}; resume with it "
                f"{'on' if started else 'off (0)'}, or delete {backup_dir(output_dir)} to "
                "start afresh")
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"adaptive": adaptive}, f)


def _check_unlabeled_pool(config: Config, data: DatasetInfo, output_dir: str,
                          resuming: bool) -> None:
    """The checkpoint's pseudo-label slots are sized by the unlabeled pool: a
    resumed run must read the pool it was started with (a fresh run records
    it in `<output_dir>/unlabeled_pool.json`)."""
    pool = {"splits": list(unlabeled_pool(data, config)),
            "num_clips": unlabeled_pool_size(data, config)}
    path = os.path.join(output_dir, POOL_JSON)
    if resuming and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            started = json.load(f)
        if started != pool:
            raise ConfigError(
                f"--unlabeled_test_clips={config.input.unlabeled_test_clips}, "
                f"--unlabeled_train_clips={config.input.unlabeled_train_clips}: the "
                f"checkpoint in {backup_dir(output_dir)} was trained with an unlabeled "
                f"pool of {started['num_clips']} clips ({', '.join(started['splits'])}), "
                f"this run's is {pool['num_clips']} ({', '.join(pool['splits'])}); resume "
                f"with the flags the run started with, or delete {backup_dir(output_dir)} "
                "to start afresh")
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(pool, f)


def _write_history(output_dir: str, model: Image2Audio, history) -> None:
    """`<output_dir>/history.json`: per-epoch logs of this process's epochs and
    the classifier's total step count (which counts restored steps too)."""
    logs = {key: [float(v) for v in values] for key, values in history.history.items()}
    with open(os.path.join(output_dir, "history.json"), "w", encoding="utf-8") as f:
        json.dump({"epochs": [e + 1 for e in history.epoch],
                   "classifier_steps": int(model.classifier_optimizer.iterations.numpy()),
                   "logs": logs}, f, indent=1, allow_nan=True)


def _switches(config: Config) -> dict:
    return {
        "use_translation": config.loss.use_translation,
        "use_density_weights": config.loss.use_density_weights,
        "use_annealing": config.loss.use_annealing,
        "use_pseudo_labels": config.graph.use_pseudo_labels,
        "propagation": config.graph.propagation,
        # Transductive: the test clips were unlabeled training clips too.
        "unlabeled_test_clips": config.input.unlabeled_test_clips,
        "unlabeled_train_clips": config.input.unlabeled_train_clips,
        "label_fraction": config.data.label_fraction,
        "seed": config.data.seed,
        "train_seed": config.training_seed,
        "epochs": config.train.epochs,
        "warmup_epochs": config.train.warmup_epochs,
        "warmup_labeled_accuracy": config.train.warmup_labeled_accuracy,
        "warmup_max_epochs": config.train.warmup_max_epochs,
    }


def evaluate(config: Config) -> dict:
    """Scores `<workdir>/classifier.keras` on the test speakers; writes and
    returns metrics.json's content."""
    if not os.path.exists(config.classifier_path):
        raise ConfigError(f"--workdir={config.workdir}: no trained classifier at "
                          f"{config.classifier_path}; run --mode=train first")
    check_trained_frontend(config)
    data = DatasetInfo(config)
    if not data.num_examples("test"):
        raise ConfigError(f"--workdir={config.workdir}: the test split is empty")
    classifier = keras.saving.load_model(config.classifier_path)
    metrics = split_metrics(class_predictor(classifier),
                            eval_dataset(config, "test", data), data.classes)
    metrics["split"] = "test"
    trained_with = config
    saved = os.path.join(config.workdir, "config.json")
    if os.path.exists(saved):
        with open(saved, encoding="utf-8") as f:
            trained_with = config_from_dict(json.load(f))
    metrics["switches"] = _switches(trained_with)
    history_path = os.path.join(config.workdir, "history.json")
    if os.path.exists(history_path):
        with open(history_path, encoding="utf-8") as f:
            ends = json.load(f).get("logs", {}).get("warmup_end")
        if ends:  # the epoch the adaptive warm-up ended at
            metrics["warmup_end"] = int(ends[-1])
    pseudo_path = os.path.join(config.workdir, "pseudo_labels.json")
    if config.graph.use_pseudo_labels and os.path.exists(pseudo_path):
        with open(pseudo_path, encoding="utf-8") as f:
            metrics["last_pseudo_label_refresh"] = json.load(f)[-1]
    with open(config.metrics_path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, allow_nan=True)
        f.write("\n")
    log.info("test UAR %.4f  WA %.4f  macro-F1 %.4f  (%d clips) -> %s",
             metrics["uar"], metrics["wa"], metrics["macro_f1"],
             metrics["num_test_clips"], config.metrics_path)
    return metrics
