"""Classification metrics and forward passes over whole splits (shared by
training, which selects and reports, and export, which checks the served models)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
from sklearn import metrics as sk_metrics


def classification_metrics(true_labels: np.ndarray, predicted: np.ndarray,
                           class_names: tuple[str, ...]) -> dict:
    """UAR (balanced accuracy), WA (accuracy), macro-F1, per-class recall and
    the confusion matrix (rows: true class, columns: predicted).

    A class absent from `true_labels` has recall NaN in `per_class_recall`
    (reported as null in JSON) and is left out of the UAR, as sklearn's
    balanced accuracy does.
    """
    true_labels = np.asarray(true_labels, np.int64)
    predicted = np.asarray(predicted, np.int64)
    labels = np.arange(len(class_names))
    confusion = sk_metrics.confusion_matrix(true_labels, predicted, labels=labels)
    support = confusion.sum(axis=1)
    recall = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    present = support > 0
    return {
        "uar": float(np.mean(recall[present])) if present.any() else float("nan"),
        "wa": float(np.mean(true_labels == predicted)) if len(true_labels) else float("nan"),
        "macro_f1": float(sk_metrics.f1_score(true_labels, predicted, labels=labels[present],
                                              average="macro", zero_division=0)),
        "per_class_recall": {name: (None if np.isnan(r) else float(r))
                             for name, r in zip(class_names, recall)},
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
        "num_test_clips": int(len(true_labels)),
    }


def run_over_split(forward: Callable[[tf.Tensor], tf.Tensor | tuple],
                   dataset: tf.data.Dataset) -> dict[str, np.ndarray]:
    """Runs `forward(logmel)` over every batch of an evaluation dataset.

    Returns numpy arrays concatenated over batches: `outputs` (or `outputs_0`,
    `outputs_1`, ... when forward returns a tuple) and the dataset's `label`,
    `true_label` and `index`.
    """
    collected: dict[str, list[np.ndarray]] = {}
    for batch in dataset:
        outputs = forward(batch["logmel"])
        if isinstance(outputs, (tuple, list)):
            named = {f"outputs_{i}": o for i, o in enumerate(outputs)}
        else:
            named = {"outputs": outputs}
        named.update({k: batch[k] for k in ("label", "true_label", "index")})
        for key, value in named.items():
            collected.setdefault(key, []).append(np.asarray(value))
    return {key: np.concatenate(parts) for key, parts in collected.items()}


def class_predictor(classifier) -> Callable[[tf.Tensor], tf.Tensor]:
    """A compiled `logmel [B, mels, T] -> [B] int64 predicted class` for
    `classifier` (inference mode; traced once per batch shape family)."""
    @tf.function(reduce_retracing=True)
    def predict(logmel):
        return tf.argmax(classifier(logmel, training=False), axis=1)
    return predict


def split_metrics(predict: Callable[[tf.Tensor], tf.Tensor], dataset: tf.data.Dataset,
                  class_names: tuple[str, ...]) -> dict:
    """`classification_metrics` of `predict` over an evaluation dataset,
    against its `true_label`."""
    result = run_over_split(predict, dataset)
    return classification_metrics(result["true_label"], result["outputs"], class_names)
