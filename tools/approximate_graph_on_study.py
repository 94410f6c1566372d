"""The approximate kNN graph on real φ embeddings: a finished study's cells.

For every cell of `--variant` (default "full") under `--study_dir` (the
`<workdir>/study` of `--mode=study`), loads the cell's saved classifier C and
its dataset, embeds the labeled and unlabeled training clips with φ exactly as
the pseudo-label refresh does (centre crops, inference mode, L2-normalised when
the cell's `--normalize_embeddings` was on; collected only where graph and C
agree when its `--pseudo_label_agreement` was on), then pseudo-labels them with the
cell's own graph flags twice: with the exact kNN graph and with the
approximate one (`--list_size`, `--probes`, `--knn_seed`). Prints one JSON row
per cell and a summary:

- `recall_at_k`: of the approximate neighbour lists against the exact ones;
- `precision_*`: accuracy of the collected pseudo-labels against the hidden
  true labels (what the refresh logs as `pseudo_label_accuracy`), and
  `coverage_*`: collected / unlabeled;
- `selected_agreement`: |collected by both| / |collected by either|.

The paired difference approximate − exact of the precision over the cells,
with a 95 % t-interval, answers whether the approximate graph changes the
pseudo-labels of a real run. On EmoDB a cell has a few hundred training
clips, fewer than 2 × the default list size of 128 (one list: the search is
then exact by construction), so the default `--list_size=16 --probes=4` splits
them into 16 lists and scans a quarter of them, which is the regime of a large
corpus at the defaults (10 of 64+ lists).

  python tools/approximate_graph_on_study.py \\
      --study_dir=runs/study_regularised/study --variant=full

The cell's weights are the final (selected) classifier, not the φ of each
refresh during training: it measures the graph on a trained φ.
"""

import argparse
import glob
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _t_interval(values):
    """(mean, half-width of the 95 % t-interval) of `values`."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def embed_cell(cell_dir):
    """(config, φ of the labeled then unlabeled clips [N, d], labels [N] with
    −1 for unlabeled, true labels [N], C's predicted class [N])."""
    import keras

    from i2a_tf.config import config_from_dict
    from i2a_tf.data.dataset_info import DatasetInfo
    from i2a_tf.data.pipeline import eval_dataset, unlabeled_dataset
    from i2a_tf.models.classifier import EMBEDDING_LAYER
    from i2a_tf.models.evaluation import run_over_split

    with open(os.path.join(cell_dir, "config.json"), encoding="utf-8") as f:
        tree = json.load(f)
    tree["workdir"] = cell_dir
    config = config_from_dict(tree)
    data = DatasetInfo(config)
    classifier = keras.saving.load_model(os.path.join(cell_dir, "classifier.keras"))
    outputs = keras.Model(
        classifier.input, [classifier.get_layer(EMBEDDING_LAYER).output, classifier.output])
    labeled = run_over_split(lambda x: outputs(x, training=False),
                             eval_dataset(config, "train_labeled", data))
    unlabeled = run_over_split(lambda x: outputs(x, training=False),
                               unlabeled_dataset(data, config, training=False,
                                                 batch_size=config.input.eval_batch_size))
    embeddings = np.concatenate([labeled["outputs_0"], unlabeled["outputs_0"]]).astype(np.float32)
    labels = np.concatenate(
        [labeled["label"], np.full(len(unlabeled["label"]), -1)]).astype(np.int32)
    true_labels = np.concatenate([labeled["true_label"], unlabeled["true_label"]])
    # C's own class for every clip (labeled ones keep their label).
    own = np.concatenate([labeled["label"], np.argmax(unlabeled["outputs_1"], axis=1)])
    return config, embeddings, labels, true_labels, own


def compare_cell(cell_dir, search):
    """One cell's row: exact vs approximate graph on its φ."""
    from bench_ops import recall_at_k

    from i2a_tf import graph
    from i2a_tf.training import callbacks

    config, embeddings, labels, true_labels, own = embed_cell(cell_dir)
    g = config.graph
    if g.propagation not in graph.PROPAGATION_METHODS:
        raise SystemExit(f"{cell_dir}: --propagation={g.propagation} builds no graph")
    unlabeled = labels < 0
    row = {"cell": os.path.relpath(cell_dir), "num_clips": len(labels),
           "num_unlabeled": int(unlabeled.sum())}
    selected_sets = {}
    for name, approximate in (("exact", None), ("approximate", search)):
        result = callbacks.graph_pseudo_labels(
            g, embeddings, labels, len(config.data.classes), approximate)
        selected = result.selected.numpy()
        predicted = result.pseudo_labels.numpy()
        if g.pseudo_label_agreement:  # as the refresh: graph and C agree
            selected = selected & (predicted == own)
        selected_sets[name] = set(np.flatnonzero(selected))
        row[f"precision_{name}"] = (
            round(float(np.mean(predicted[selected] == true_labels[selected])), 4)
            if selected.any() else math.nan)
        row[f"coverage_{name}"] = round(float(selected.sum() / unlabeled.sum()), 4)
    # Recall on the embeddings the graph was built on.
    seen = callbacks.graph_embeddings(g, embeddings).astype(np.float32)
    indices, _ = graph.knn_graph(seen, min(g.knn_k, len(labels) - 1), approximate=search)
    row["recall_at_k"] = round(recall_at_k(seen, indices.numpy(), len(labels)), 4)
    union = selected_sets["exact"] | selected_sets["approximate"]
    row["selected_agreement"] = round(
        len(selected_sets["exact"] & selected_sets["approximate"]) / max(len(union), 1), 4)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study_dir", required=True,
                        help="the study folder: <workdir>/study of --mode=study")
    parser.add_argument("--variant", default="full",
                        help="cells of this variant (its folder name in each cell)")
    parser.add_argument("--list_size", type=int, default=16)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--knn_seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.study_dir):
        raise SystemExit(f"--study_dir={args.study_dir}: no such folder")
    cells = sorted(
        os.path.dirname(path) for path in glob.glob(
            os.path.join(args.study_dir, "*", args.variant, "classifier.keras")))
    if not cells:
        raise SystemExit(f"--study_dir={args.study_dir}: no cell of variant "
                         f"{args.variant!r} with a classifier.keras")

    from i2a_tf import graph

    search = graph.ApproximateSearch(args.list_size, args.probes, args.knn_seed)
    rows = []
    for cell in cells:
        row = compare_cell(cell, search)
        print(json.dumps(row), flush=True)
        rows.append(row)
    differences = [r["precision_approximate"] - r["precision_exact"] for r in rows
                   if not (math.isnan(r["precision_approximate"])
                           or math.isnan(r["precision_exact"]))]
    mean, half = _t_interval(differences)
    summary = {
        "cells": len(rows),
        "search": search._asdict(),
        "recall_at_k_mean": round(float(np.mean([r["recall_at_k"] for r in rows])), 4),
        "precision_exact_mean": round(float(np.nanmean([r["precision_exact"] for r in rows])), 4),
        "precision_approximate_mean": round(
            float(np.nanmean([r["precision_approximate"] for r in rows])), 4),
        "precision_difference": round(mean, 4),
        "precision_difference_ci95": [round(mean - half, 4), round(mean + half, 4)],
        "coverage_exact_mean": round(float(np.mean([r["coverage_exact"] for r in rows])), 4),
        "coverage_approximate_mean": round(
            float(np.mean([r["coverage_approximate"] for r in rows])), 4),
        "selected_agreement_mean": round(
            float(np.mean([r["selected_agreement"] for r in rows])), 4),
    }
    print(json.dumps({"summary": summary}, indent=1))
    return summary


if __name__ == "__main__":
    main()
