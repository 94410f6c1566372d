"""Pseudo-labels for unlabeled nodes from per-class propagation scores.

Scores `[N, C]` come from `widest_path` (bottleneck strengths, +inf for a
labeled node's own class) or `label_spreading` (normalised class masses); both
are "larger = more strongly reached by class c", so one interface serves both:

- pseudo-label: `argmax_c scores[u, c]` (the given label for labeled nodes;
  −1 for an unlabeled node no class reaches, whose scores are all 0);
- confidence: relative margin of the best two classes,
  `(s_1 − s_2) / s_1` in [0, 1] (0 when s_1 = 0, 1 when s_1 = +inf);
- selection among unlabeled nodes with s_1 > 0: `s_1 ≥ threshold`
  ("threshold"), or the top `top_fraction` by s_1 within each pseudo-class
  ("top_fraction", at least one per non-empty class).

`pseudo_labels_from_embeddings` runs graph build → edge strengths →
propagation → pseudo-labels in one call.
"""

import typing

import tensorflow as tf

from i2a_tf.density import bandwidth as bandwidth_rules
from i2a_tf.graph import edge_strength
from i2a_tf.graph import knn
from i2a_tf.graph import propagation

PROPAGATION_METHODS = ("widest_path", "label_spreading")
SELECTION_RULES = ("threshold", "top_fraction")


def _best_two(scores):
    top_two, _ = tf.math.top_k(scores, 2)
    return top_two[:, 0], top_two[:, 1]


def pseudo_label_confidences(scores):
    """Relative margin between the best two classes.

    Args:
      scores: `[N, C]` float32 ≥ 0 (C ≥ 2), larger = more strongly reached.

    Returns:
      `[N]` float32 in [0, 1], `(s_1 − s_2) / s_1`; 0 where s_1 = 0, 1 where
      s_1 = +inf > s_2 (labeled nodes under widest path).
    """
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    best, second = _best_two(scores)
    finite_margin = (best - second) / tf.where(best > 0, best, 1.0)
    margin = tf.where(
        tf.math.is_inf(best), tf.where(tf.math.is_inf(second), 0.0, 1.0), finite_margin
    )
    return tf.where(best > 0, margin, 0.0)


def select_pseudo_labels(scores, labels, selection="top_fraction", threshold=0.0, top_fraction=0.5):
    """Which unlabeled nodes to collect as pseudo-labeled.

    Args:
      scores: `[N, C]` float32 ≥ 0.
      labels: `[N]` int32, −1 for unlabeled (only these can be selected).
      selection: Python str in `SELECTION_RULES`.
      threshold: scalar float ≥ 0, minimum best score s_1 ("threshold").
      top_fraction: scalar float in [0, 1], fraction kept per pseudo-class,
        rounded up ("top_fraction"); ties in s_1 are broken by node order.

    Returns:
      `[N]` bool, True for selected unlabeled nodes; always with s_1 > 0 and
      s_1 > s_2 (a node whose best two classes tie is never collected).
    """
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    best, second = _best_two(scores)
    # A tie for the best class (common under widest path, whose scores
    # saturate at a node's strongest edge) has no label to collect: argmax
    # would hand it to the lowest class id.
    eligible = tf.logical_and(tf.logical_and(labels < 0, best > 0), best > second)
    if selection == "threshold":
        return tf.logical_and(eligible, best >= tf.cast(threshold, tf.float32))
    if selection != "top_fraction":
        raise ValueError(f"unknown selection {selection!r}; expected one of {SELECTION_RULES}")
    num_classes = scores.shape[1]
    order = tf.argsort(tf.where(eligible, best, -1.0), direction="DESCENDING", stable=True)
    sorted_classes = tf.gather(tf.argmax(scores, axis=1, output_type=tf.int32), order)
    sorted_eligible = tf.gather(eligible, order)
    class_members = (
        tf.one_hot(sorted_classes, num_classes) * tf.cast(sorted_eligible, tf.float32)[:, None]
    )
    ranks = tf.gather(
        tf.cumsum(class_members, axis=0, exclusive=True), sorted_classes, batch_dims=1
    )
    quotas = tf.math.ceil(tf.cast(top_fraction, tf.float32) * tf.reduce_sum(class_members, axis=0))
    sorted_selected = tf.logical_and(sorted_eligible, ranks < tf.gather(quotas, sorted_classes))
    return tf.gather(sorted_selected, tf.argsort(order))


class PseudoLabels(typing.NamedTuple):
    """Result of `pseudo_labels_from_embeddings`.

    scores: `[N, C]` float32, per-class propagation scores.
    pseudo_labels: `[N]` int32, argmax class (given label for labeled nodes;
      −1 where no class reaches the node).
    confidences: `[N]` float32 in [0, 1], relative best-two margin.
    selected: `[N]` bool, unlabeled nodes collected for training.
    """

    scores: tf.Tensor
    pseudo_labels: tf.Tensor
    confidences: tf.Tensor
    selected: tf.Tensor


def pseudo_labels_from_embeddings(
    embeddings,
    labels,
    num_classes,
    *,
    method="widest_path",
    k=10,
    edge_strength_mode="min_endpoint",
    bandwidth="scott",
    selection="top_fraction",
    threshold=0.0,
    top_fraction=0.5,
    alpha=0.2,
    max_iterations=None,
    tol=1e-3,
    block_elements=None,
    approximate=None,
):
    """kNN graph → edge strengths → propagation → pseudo-labels, in one call.

    Args:
      embeddings: `[N, d]` float32, φ of labeled and unlabeled clips.
      labels: `[N]` int32, class in [0, C) or −1 for unlabeled.
      num_classes: Python int C ≥ 2.
      method: "widest_path" (density-weighted bottleneck paths) or
        "label_spreading" (Zhou et al. on the same kNN lists with connectivity
        weights: sklearn's `LabelSpreading(kernel='knn', n_neighbors=k + 1)`).
      k: Python int, neighbours per node (self excluded).
      edge_strength_mode: "min_endpoint" or "midpoint" (widest path only; see
        `graph.edge_strength`).
      bandwidth: KDE kernel std: a Python float, or a rule name of
        `density.BANDWIDTH_RULES` other than "fixed" applied to all embeddings.
      selection, threshold, top_fraction: see `select_pseudo_labels`.
      alpha, tol: label spreading parameters.
      max_iterations: cap on propagation sweeps (default N for widest path,
        30 for label spreading).
      block_elements: optional Python int, element budget of distance blocks.
      approximate: None for the exact kNN graph, or a `knn.ApproximateSearch`
        (lists and, for widest path, node densities from the scanned points
        only; see `knn.knn_graph_with_density`).

    Returns:
      `PseudoLabels`.
    """
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    k, num_classes = int(k), int(num_classes)
    if method == "widest_path":
        if isinstance(bandwidth, str):
            kernel_std = bandwidth_rules.kde_bandwidth(embeddings, bandwidth)
        else:
            kernel_std = tf.constant(bandwidth, tf.float32)
        # One fused pass gives the kNN lists and the node densities that both
        # edge-strength modes use (as endpoints, or as the quantile reference).
        graph = knn.knn_graph_with_density(
            embeddings, k, kernel_std, block_elements=block_elements, approximate=approximate
        )
        indices = graph.indices
        node_log_densities = graph.node_log_densities
        if approximate is not None and edge_strength_mode == "midpoint":
            # Midpoint densities sum over all nodes, so their quantiles need
            # the full node densities too, not the scanned points' lower
            # bounds (an O(N²) pass, below the midpoint KDE's O(N²·k)).
            node_log_densities = None
        strengths = edge_strength.edge_strengths(
            embeddings, indices, kernel_std, mode=edge_strength_mode,
            node_log_densities=node_log_densities, block_elements=block_elements
        )
        scores = propagation.widest_path(
            indices, strengths, labels, num_classes, max_iterations=max_iterations
        )
    elif method == "label_spreading":
        indices, _ = knn.knn_graph(
            embeddings, k, block_elements=block_elements, approximate=approximate
        )
        scores = propagation.label_spreading(
            indices,
            None,
            labels,
            num_classes,
            alpha=alpha,
            max_iterations=30 if max_iterations is None else max_iterations,
            tol=tol,
        )
    else:
        raise ValueError(
            f"unknown propagation method {method!r}; expected one of {PROPAGATION_METHODS}"
        )
    reached = tf.reduce_max(scores, axis=1) > 0
    predicted = tf.where(reached, tf.argmax(scores, axis=1, output_type=tf.int32), -1)
    return PseudoLabels(
        scores=scores,
        pseudo_labels=tf.where(labels >= 0, labels, predicted),
        confidences=pseudo_label_confidences(scores),
        selected=select_pseudo_labels(scores, labels, selection, threshold, top_fraction),
    )
