"""Callbacks that refresh the training state and manage the run.

They run eagerly between steps (cross-replica context) and write into the
model's state variables, so the compiled train step never retraces:

  EpochClock          model.epoch <- the epoch about to run
  AdaptiveWarmup      model.warmup_end <- one epoch later while C's labeled
                      accuracy is below --warmup_labeled_accuracy
  JudgeSnapshot       the frozen judge of translations <- C, once, after warm-up
                      (when the full objective starts)
  ClassBankRefresh    per-class φ banks of labeled clips, every epoch
  PseudoLabelRefresh  graph pseudo-labels of unlabeled clips, every K epochs
  EpochEvaluation     validation / test UAR per epoch of the weights that would
                      be saved (the EMA when on), best-model selection,
                      confusion-matrix and translated-spectrogram images
  ConsoleProgress     one short line per epoch (and a progress bar on a terminal)
  FiniteBackupAndRestore  BackupAndRestore that never saves a non-finite epoch
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from i2a_tf import graph
from i2a_tf.config import Config, bandwidth_setting
from i2a_tf.models.evaluation import class_predictor, run_over_split, split_metrics

log = logging.getLogger("i2a_tf.training")


def _knn_search(graph_config):
    """None (exact kNN) or the `graph.ApproximateSearch` the flags ask for."""
    if graph_config.knn_method == "exact":
        return None
    return graph.ApproximateSearch(
        list_size=graph_config.knn_list_size,
        probes=graph_config.knn_probes,
        seed=graph_config.knn_seed,
    )


def graph_embeddings(graph_config, embeddings):
    """φ as the graph sees it: scaled to unit length when
    `normalize_embeddings` is on."""
    if not graph_config.normalize_embeddings:
        return embeddings
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def graph_pseudo_labels(graph_config, embeddings, labels, num_classes, approximate):
    """The refresh's graph pseudo-labels of labeled and unlabeled clips.

    Args:
      graph_config: the run's `GraphConfig` (propagation other than
        self-training, k, edge strengths, bandwidth, selection, normalisation).
      embeddings: `[N, d]` φ of the labeled then the unlabeled clips (passed
        through `graph_embeddings` here).
      labels: `[N]` int32, −1 for unlabeled.
      num_classes: Python int.
      approximate: None (exact kNN) or a `graph.ApproximateSearch`.

    Returns:
      `graph.PseudoLabels` over all N clips.
    """
    g = graph_config
    return graph.pseudo_labels_from_embeddings(
        graph_embeddings(g, embeddings), labels, num_classes, method=g.propagation,
        k=min(g.knn_k, len(labels) - 1), edge_strength_mode=g.edge_strength,
        bandwidth=bandwidth_setting(g.graph_bandwidth),
        selection=g.pseudo_label_selection, threshold=g.pseudo_label_threshold,
        top_fraction=g.pseudo_label_top_fraction, alpha=g.spreading_alpha,
        approximate=approximate)


def _embed_fn(model):
    @tf.function(reduce_retracing=True)
    def embed(logmel):
        return model.classifier_outputs(logmel, training=False)
    return embed


class EpochClock(keras.callbacks.Callback):
    """Sets `model.epoch` (the annealing and warm-up clock) at each epoch start."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.epoch.assign(float(epoch))


class AdaptiveWarmup(keras.callbacks.Callback):
    """--warmup_labeled_accuracy: at the end of the last scheduled warm-up
    epoch, pushes the start of the full objective back by one epoch while the
    epoch's labeled accuracy is below the threshold (up to the model's
    `latest_warmup_end()`). Logs `warmup_end` each epoch. Runs before the
    checkpoint's callback, so a resumed run continues with the same end."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        end = self.model.warmup_end_epoch()
        if epoch + 1 == end:
            if "labeled_accuracy" not in logs:
                raise RuntimeError("--warmup_labeled_accuracy: the epoch logs have no "
                                   "labeled_accuracy to judge the warm-up by")
            accuracy = float(logs["labeled_accuracy"])
            latest = self.model.latest_warmup_end()
            if accuracy < self.threshold and end < latest:
                end += 1
                self.model.warmup_end.assign(float(end))
                log.info("epoch %d: labeled accuracy %.3f < --warmup_labeled_accuracy="
                         "%g: warm-up goes on", epoch + 1, accuracy, self.threshold)
            else:
                log.info("epoch %d: labeled accuracy %.3f%s: warm-up ends, the full "
                         "objective starts at epoch %d", epoch + 1, accuracy,
                         f" (the latest end, {latest} epochs)" if accuracy < self.threshold
                         else f" >= --warmup_labeled_accuracy={self.threshold:g}", end + 1)
        logs["warmup_end"] = float(end)


class JudgeSnapshot(keras.callbacks.Callback):
    """At the start of the first full-objective epoch, copies the weights
    training would save (the EMA when on) into the model's frozen judge of
    translations. A run resumed later restores the judge from its checkpoint."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.model.warmup_end_epoch():
            with saved_weights(self.model):
                self.model.take_judge_snapshot()


class ClassBankRefresh(keras.callbacks.Callback):
    """Refills the per-class φ banks from the labeled clips (centre crops) at
    every epoch start, so density weights follow the current φ."""

    def __init__(self, labeled_dataset: tf.data.Dataset):
        super().__init__()
        self.labeled_dataset = labeled_dataset

        self.embed = None

    def on_epoch_begin(self, epoch, logs=None):
        self.embed = self.embed or _embed_fn(self.model)
        result = run_over_split(lambda x: self.embed(x)[0], self.labeled_dataset)
        self.model.set_class_banks(result["outputs"], result["label"])


class PseudoLabelRefresh(keras.callbacks.Callback):
    """Every `pseudo_label_every` epochs after warm-up: embed labeled and
    unlabeled clips, build the kNN graph, propagate (widest path or label
    spreading) and write pseudo-labels and confidences into the model.

    Logs the pseudo-label accuracy against the hidden `true_label` (analysis
    only, it never reaches a loss): over the collected clips, over every
    reached clip, and the coverage (collected / unlabeled). The history goes to
    `<workdir>/pseudo_labels.json`; the last refresh's figures are added to the
    epoch logs (so TensorBoard plots them).
    """

    def __init__(self, config: Config, labeled_dataset: tf.data.Dataset,
                 unlabeled_dataset: tf.data.Dataset, output_dir: str | None = None):
        super().__init__()
        self.config = config
        self.labeled_dataset = labeled_dataset
        self.unlabeled_dataset = unlabeled_dataset
        self.path = os.path.join(output_dir or config.workdir, "pseudo_labels.json")
        self.last: dict | None = None
        self.embed = None

    def _due(self, epoch: int) -> bool:
        since = epoch - self.model.warmup_end_epoch()
        return since >= 0 and since % self.config.graph.pseudo_label_every == 0

    def on_epoch_begin(self, epoch, logs=None):
        if not self._due(epoch):
            return
        g = self.config.graph
        self.embed = self.embed or _embed_fn(self.model)
        # The graph is built on the classifier training would save (the EMA).
        with saved_weights(self.model):
            labeled = run_over_split(self.embed, self.labeled_dataset)
            unlabeled = run_over_split(self.embed, self.unlabeled_dataset)
        embeddings = np.concatenate([labeled["outputs_0"], unlabeled["outputs_0"]])
        logits = unlabeled["outputs_1"]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        own = np.argmax(probabilities, axis=1).astype(np.int32)
        labels = np.concatenate([labeled["label"],
                                 np.full(len(unlabeled["label"]), -1, np.int32)])
        start = len(labeled["label"])
        if g.propagation == "self_training":
            # No graph: C's own predictions, collected by the same rules.
            scores = probabilities.astype(np.float32)
            unlabeled_only = np.full(len(own), -1, np.int32)
            pseudo = own
            selected = graph.select_pseudo_labels(
                scores, unlabeled_only, g.pseudo_label_selection,
                g.pseudo_label_threshold, g.pseudo_label_top_fraction).numpy()
            margins = graph.pseudo_label_confidences(scores).numpy()
        else:
            result = graph_pseudo_labels(g, embeddings, labels, self.model.num_classes,
                                         _knn_search(g))
            pseudo = result.pseudo_labels.numpy()[start:]
            selected = result.selected.numpy()[start:]
            margins = result.confidences.numpy()[start:]
        if g.pseudo_label_agreement:
            selected = selected & (pseudo == own)
        confidences = np.where(selected, margins, 0.0)
        if g.balance_pseudo_labels:
            confidences = confidences * class_balance_factors(
                pseudo, selected & (confidences > 0), self.model.num_classes)
        self.model.set_pseudo_labels(unlabeled["index"], pseudo, confidences)
        truth = unlabeled["true_label"]
        reached = pseudo >= 0
        # Self-training's precision at the same coverage: C's own most confident
        # predictions, as many clips as the graph collected.
        top = np.argsort(-probabilities.max(axis=1), kind="stable")[:int(selected.sum())]
        self.last = {
            "epoch": int(epoch),
            "pseudo_label_accuracy": _fraction(pseudo[selected] == truth[selected]),
            "pseudo_label_reached_accuracy": _fraction(pseudo[reached] == truth[reached]),
            "pseudo_label_coverage": float(np.mean(selected)) if len(selected) else 0.0,
            "self_training_accuracy": _fraction(own[top] == truth[top]),
            "classifier_unlabeled_accuracy": _fraction(own == truth),
            "num_collected": int(selected.sum()),
            "num_unlabeled": int(len(selected)),
        }
        log.info("pseudo-labels at epoch %d: %d of %d unlabeled clips collected, "
                 "%.0f %% of them correct (hidden labels; self-training at that "
                 "coverage %.0f %%)",
                 epoch, self.last["num_collected"], self.last["num_unlabeled"],
                 100 * self.last["pseudo_label_accuracy"],
                 100 * self.last["self_training_accuracy"])
        history = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                history = [h for h in json.load(f) if h["epoch"] < epoch]
        history.append(self.last)
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(history, f, indent=1)

    def on_epoch_end(self, epoch, logs=None):
        if self.last is not None and logs is not None:
            for key in ("pseudo_label_accuracy", "pseudo_label_coverage",
                        "self_training_accuracy"):
                logs[key] = self.last[key]


def class_balance_factors(pseudo_labels: np.ndarray, collected: np.ndarray,
                          num_classes: int) -> np.ndarray:
    """Per-clip factor n / (K · n_c) for collected clips of pseudo-class c, with
    n collected clips over K present pseudo-classes (1 where not collected).

    Multiplying the confidences by it gives each present pseudo-class the same
    share of the confidence-weighted loss (for equal mean confidence).
    """
    counts = np.bincount(pseudo_labels[collected], minlength=num_classes)
    present = np.count_nonzero(counts)
    factors = np.ones(len(pseudo_labels), np.float32)
    if present:
        per_class = collected.sum() / (present * np.maximum(counts, 1))
        factors[collected] = per_class[pseudo_labels[collected]]
    return factors


def _fraction(hits: np.ndarray) -> float:
    return float(np.mean(hits)) if len(hits) else float("nan")


@contextlib.contextmanager
def saved_weights(model):
    """Inside: the classifier holds the weights that training would save, its
    exponential moving average when the classifier optimizer keeps one (what
    `finalize_variable_values` writes at the end); the raw weights come back
    after."""
    optimizer = model.classifier_optimizer
    # Before the first update the average is not filled yet (zeros): the raw
    # weights are the ones training would save.
    if not optimizer.use_ema or int(optimizer.iterations.numpy()) == 0:
        yield
        return
    variables = model.classifier.trainable_variables
    raw = [variable.numpy() for variable in variables]
    optimizer.finalize_variable_values(variables)
    try:
        yield
    finally:
        for variable, value in zip(variables, raw):
            variable.assign(value)


class EpochEvaluation(keras.callbacks.Callback):
    """UAR per epoch and best-model selection by validation UAR.

    With a validation split, `val_uar` is computed each epoch and the
    classifier weights of the best epoch are kept in `best_path` (with
    `best.json` recording the epoch and UAR, so a resumed run keeps them).
    The test split's UAR is logged as `test_uar` for analysis only; it never
    selects a model. Both score (and the best epoch saves) the classifier's
    weights as training would save them (`saved_weights`: the EMA when on), so
    the last epoch's `test_uar` is the UAR `metrics.json` reports. Images (TensorBoard, `image_dir`): the confusion matrix of
    the selection split (validation, else test) and one translated
    spectrogram per class from fixed faces. The best-model files go to
    `output_dir` (default the workdir).
    """

    def __init__(self, config: Config, val_dataset, test_dataset, faces, image_dir,
                 output_dir: str | None = None):
        super().__init__()
        self.config = config
        self.val_dataset = val_dataset
        self.test_dataset = test_dataset
        self.faces = faces  # (images [C, S, S, 1], labels [C]) or None
        output_dir = output_dir or config.workdir
        self.best_path = os.path.join(output_dir, "best.weights.h5")
        self.best_json = os.path.join(output_dir, "best.json")
        self.writer = tf.summary.create_file_writer(image_dir)
        self.predict = None

    def _best(self) -> dict:
        if os.path.exists(self.best_json):
            with open(self.best_json, encoding="utf-8") as f:
                return json.load(f)
        return {"epoch": -1, "val_uar": -1.0}

    def _metrics(self, dataset):
        self.predict = self.predict or class_predictor(self.model.classifier)
        return split_metrics(self.predict, dataset, self.model.config.data.classes)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        with saved_weights(self.model):
            shown = self._score(epoch, logs)
        with self.writer.as_default(step=epoch):
            if shown is not None:
                tf.summary.image("confusion_matrix",
                                 confusion_image(np.asarray(shown["confusion_matrix"])))
            if self.faces is not None and self.model.use_translation:
                tf.summary.image("translated_per_class", self._translated_grid())
        self.writer.flush()

    def _score(self, epoch, logs):
        shown = None
        if self.test_dataset is not None:
            shown = self._metrics(self.test_dataset)
            logs["test_uar"] = shown["uar"]
        if self.val_dataset is not None:
            shown = self._metrics(self.val_dataset)
            logs["val_uar"] = shown["uar"]
            if logs_finite(logs) and shown["uar"] > self._best()["val_uar"]:
                self.model.classifier.save_weights(self.best_path)
                with open(self.best_json, "w", encoding="utf-8") as f:
                    json.dump({"epoch": int(epoch), "val_uar": shown["uar"]}, f)
        return shown

    def _translated_grid(self) -> np.ndarray:
        images, labels = self.faces
        inputs = [self.model.face_encoder(images, training=False),
                  tf.convert_to_tensor(labels)]
        if self.config.model.noise_dim:
            inputs.append(tf.zeros([len(labels), self.config.model.noise_dim]))
        translated = self.model.generator(inputs, training=False).numpy()
        return spectrogram_grid(translated)


class ConsoleProgress(keras.callbacks.Callback):
    """The console during `fit` (which itself runs silent): one short line per
    epoch with the terms that matter, and with `bar` a progress bar that the
    line then overwrites. Every other per-epoch number is in TensorBoard and
    history.json. Runs after the callbacks that add to the epoch's logs."""

    TERMS = (("c_labeled_loss", "labeled loss {:.3f}"), ("labeled_accuracy", "acc {:.2f}"),
             ("translated_accuracy", "translated acc {:.2f}"),
             ("mean_density_weight", "density w {:.2g}"),
             ("judge_accuracy", "judge acc {:.2f}"),
             ("consistency_mask_fraction", "consistent {:.2f}"),
             ("pseudo_label_accuracy", "pseudo-label acc {:.2f}"),
             ("pseudo_label_coverage", "coverage {:.2f}"),
             ("val_uar", "val UAR {:.3f}"), ("test_uar", "test UAR {:.3f}"))
    BAR = 24

    def __init__(self, epochs: int, steps: int, bar: bool, stream=None):
        super().__init__()
        self.epochs, self.steps, self.bar = epochs, steps, bar
        self.stream = stream or sys.stdout
        self.started = time.time()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if self.bar:
            done = min(batch + 1, self.steps)
            filled = self.BAR * done // self.steps
            self.stream.write(f"\rEpoch {self.epoch}/{self.epochs} "
                              f"[{'=' * filled}{'.' * (self.BAR - filled)}] {done}/{self.steps}")
            self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        terms = [form.format(float(logs[key])) for key, form in self.TERMS if key in logs]
        line = (f"Epoch {epoch + 1}/{self.epochs}  " + "  ".join(terms)
                + f"  ({time.time() - self.started:.0f} s)")
        clear = "\r" + " " * (self.BAR + 40) + "\r" if self.bar else ""
        self.stream.write(clear + line + "\n")
        self.stream.flush()


def confusion_image(confusion: np.ndarray, cell: int = 24) -> np.ndarray:
    """Row-normalised confusion matrix as a `[1, C·cell, C·cell, 1]` grey image
    (white = all of the true class's clips in that column)."""
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = confusion / np.maximum(rows, 1)
    image = np.kron(normalised, np.ones((cell, cell)))
    return image[np.newaxis, :, :, np.newaxis].astype(np.float32)


def spectrogram_grid(logmels: np.ndarray) -> np.ndarray:
    """`[C, mels, T]` log-mels stacked top to bottom (class order), low
    frequencies at the bottom of each, scaled to [0, 1]: `[1, C·mels, T, 1]`."""
    flipped = logmels[:, ::-1, :]
    low, high = np.percentile(flipped, 1), np.percentile(flipped, 99)
    scaled = np.clip((flipped - low) / max(high - low, 1e-6), 0.0, 1.0)
    return np.concatenate(list(scaled), axis=0)[np.newaxis, :, :, np.newaxis].astype(
        np.float32)


class FiniteBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that skips saving an epoch whose logs are not finite.

    Keras calls `on_epoch_end` even after `TerminateOnNaN` stops an epoch, and
    the stock callback would then overwrite the last good checkpoint with NaN
    weights. The checkpoint is kept when training ends (the trainer deletes it
    after a successful run), so a diverged or killed run can be resumed.
    Weights and metadata are each written to a temporary file and renamed, so
    a kill while saving leaves the previous epoch's checkpoint readable.
    `on_restore()` runs after the restore (e.g. to re-apply flags such as the
    learning rates that the checkpoint also holds).
    """

    def __init__(self, backup_dir: str, on_restore=None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.diverged_at: int | None = None
        self.on_restore = on_restore

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.on_restore is not None:
            self.on_restore()

    def on_epoch_end(self, epoch, logs=None):
        if not logs_finite(logs):
            self.diverged_at = epoch
            return
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        partial = self._weights_path + ".partial.weights.h5"
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, self._weights_path)
        partial = self._training_metadata_path + ".partial"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
        os.replace(partial, self._training_metadata_path)


# Figures that may be NaN without the run diverging (e.g. the accuracy over
# zero collected pseudo-labels); they never decide whether to checkpoint.
ANALYSIS_LOGS = ("pseudo_label_accuracy", "pseudo_label_coverage",
                 "self_training_accuracy", "test_uar", "val_uar")


def logs_finite(logs) -> bool:
    """True when every training figure in `logs` is a finite number."""
    return all(math.isfinite(float(v)) for k, v in (logs or {}).items()
               if k not in ANALYSIS_LOGS and np.ndim(v) == 0)
