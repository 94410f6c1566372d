"""Label propagation on padded neighbour lists: widest paths and label spreading.

Both return `[N, C]` per-class scores ("larger = more strongly reached by class
c"), so the trainer can switch between them by config
(`propagation=widest_path|label_spreading`).

Widest path (the method). For node u and class c,

    B(u, c) = max over paths P from a labeled node of class c to u of
              min_{edges e ∈ P} strength(e),

the strength of the weakest edge on the best path: high when u is reachable
from class c without leaving dense regions. B is the least fixed point, above
the clamped start, of the (max, min) relaxation

    B(u, c) ← max( B(u, c), max_{v ~ u} min(e_uv, B(v, c)) ),

where v ~ u runs over both directions of every listed edge. One synchronous
sweep extends every path by one edge, so the loop stops after (number of edges
on the longest needed best path) + 1 sweeps; it runs as one
`tf.function(jit_compile=True)` op (`tf.while_loop`) on `[N, k]` lists with
memory O(N·k·C).

Label spreading (Zhou et al., 2004; the baseline). With affinity W (row i of
the list holds W_ij = weights[i, m] for j = indices[i, m]), degrees D =
diag(column sums of W without self loops), and S = D^(−1/2) W D^(−1/2) (zero
diagonal), iterate from F = Y:

    F ← α S F + (1 − α) Y

until Σ|F − F_prev| < tol or `max_iterations` sweeps, then normalise each row
to sum 1. This is exactly what `sklearn.semi_supervised.LabelSpreading` does
with `kernel='knn'`: its affinity is the directed kNN connectivity graph
*including* self (n_neighbors ones per row, so a list of
`k = n_neighbors − 1` non-self neighbours with weight 1 gives the same
graph after the diagonal is zeroed), and its degrees are column sums
(`scipy.sparse.csgraph.laplacian`'s default). Defaults mirror sklearn's
(α = 0.2, 30 iterations, tol = 1e-3). For a symmetric W this is the standard
symmetric normalisation of Zhou et al.
"""

import math

import numpy as np
import tensorflow as tf


def _check_labels(labels, num_classes):
    """Eagerly, labels must be −1 or a class id: XLA would clamp others silently."""
    if tf.executing_eagerly():
        values = labels.numpy()
        bad = values[(values < -1) | (values >= num_classes)]
        if bad.size:
            raise ValueError(f"labels must be -1 (unlabeled) or in [0, {num_classes}); "
                             f"got {np.unique(bad)[:5].tolist()}")


@tf.function(jit_compile=True)
def _widest_path_compiled(indices, strengths, labels, num_classes, max_checks, sweeps_per_check):
    num_nodes, num_neighbours = indices.shape
    listed = indices >= 0
    neighbours = tf.maximum(indices, 0)
    # Padding edges get strength 0: min(0, ·) = 0 never raises B (B ≥ 0).
    edge_strengths = tf.where(listed, tf.maximum(strengths, 0.0), 0.0)[:, :, None]
    flat_targets = tf.reshape(neighbours, [-1])
    labeled = (labels >= 0)[:, None]
    clamped = tf.where(tf.one_hot(labels, num_classes) > 0.5, math.inf, 0.0)

    def sweep(paths):
        # Row u reaches along its own listed edges u → v ...
        forward = tf.reduce_max(tf.minimum(edge_strengths, tf.gather(paths, neighbours)), axis=1)
        # ... and along the reverse of edges listed in other rows, v → u.
        offered = tf.reshape(
            tf.minimum(edge_strengths, paths[:, None, :]), [num_nodes * num_neighbours, num_classes]
        )
        backward = tf.math.unsorted_segment_max(offered, flat_targets, num_nodes)
        relaxed = tf.maximum(paths, tf.maximum(forward, backward))
        # Clamping after every sweep keeps labeled nodes at +inf / 0, so no
        # path of another class runs through a labeled node.
        return tf.where(labeled, clamped, relaxed)

    def keep_going(checks, paths, changed):
        del paths
        return tf.logical_and(changed, checks < max_checks)

    def body(checks, paths, changed):
        del changed
        relaxed = paths
        for _ in range(sweeps_per_check):
            relaxed = sweep(relaxed)
        return checks + 1, relaxed, tf.reduce_any(relaxed != paths)

    _, paths, _ = tf.while_loop(keep_going, body, (tf.constant(0), clamped, tf.constant(True)))
    return paths


def widest_path(
    indices, strengths, labels, num_classes, *, max_iterations=None, sweeps_per_check=1
):
    """Per-class widest-path strengths from labeled nodes to every node.

    Args:
      indices: `[N, k]` int32 neighbour lists, −1 for padding. Edge
        `i — indices[i, j]` is traversable both ways; an edge listed in both
        directions counts with the larger of its two strengths.
      strengths: `[N, k]` float32 ≥ 0, strength of edge `i — indices[i, j]`
        (0 = no edge).
      labels: `[N]` int32, class in [0, C) for labeled nodes, −1 for unlabeled.
      num_classes: Python int C.
      max_iterations: optional Python int, cap on relaxation sweeps (default N,
        enough for any simple path; the loop normally stops much earlier, when a
        sweep changes nothing).
      sweeps_per_check: Python int ≥ 1, sweeps between convergence checks
        (larger values trade a few wasted sweeps for fewer loop iterations).

    Returns:
      `[N, C]` float32 ≥ 0: `B(u, c)` = max over paths from a labeled node of
      class c to u (not through labeled nodes of other classes) of the minimum
      edge strength along the path; 0 if no such path exists. Labeled nodes
      are clamped to +inf for their own class and 0 for the others.
    """
    indices = tf.cast(tf.convert_to_tensor(indices), tf.int32)
    strengths = tf.cast(tf.convert_to_tensor(strengths), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    num_classes = int(num_classes)
    _check_labels(labels, num_classes)
    num_nodes = indices.shape[0]
    if num_nodes is None:
        raise ValueError("widest_path needs a static number of nodes N (indices of "
                         "shape [N, k] with N known when traced)")
    max_iterations = num_nodes if max_iterations is None else max_iterations
    max_checks = -(-max_iterations // sweeps_per_check)
    return _widest_path_compiled(
        indices, strengths, labels, num_classes, tf.constant(max_checks), sweeps_per_check
    )


@tf.function(jit_compile=True)
def _label_spreading_compiled(indices, weights, labels, num_classes, alpha, max_iterations, tol):
    num_nodes = indices.shape[0]
    neighbours = tf.maximum(indices, 0)
    is_self = neighbours == tf.range(num_nodes)[:, None]
    edge_weights = tf.where(tf.logical_and(indices >= 0, tf.logical_not(is_self)), weights, 0.0)
    in_degrees = tf.math.unsorted_segment_sum(
        tf.reshape(edge_weights, [-1]), tf.reshape(neighbours, [-1]), num_nodes
    )
    # Isolated nodes keep degree 1, as in scipy's normalised Laplacian.
    inverse_sqrt_degrees = tf.where(in_degrees > 0, tf.math.rsqrt(in_degrees), 1.0)[:, None]
    label_indicators = tf.one_hot(labels, num_classes)
    anchor = (1.0 - alpha) * label_indicators

    def spread(scores):
        scaled = inverse_sqrt_degrees * scores
        summed = tf.reduce_sum(edge_weights[:, :, None] * tf.gather(scaled, neighbours), axis=1)
        return alpha * inverse_sqrt_degrees * summed + anchor

    def keep_going(iteration, scores, previous):
        return tf.logical_and(
            iteration < max_iterations, tf.reduce_sum(tf.abs(scores - previous)) >= tol
        )

    def body(iteration, scores, previous):
        del previous
        return iteration + 1, spread(scores), scores

    _, scores, _ = tf.while_loop(
        keep_going, body, (tf.constant(0), label_indicators, tf.zeros_like(label_indicators))
    )
    totals = tf.reduce_sum(scores, axis=1, keepdims=True)
    return tf.where(totals > 0, scores / tf.where(totals > 0, totals, 1.0), 0.0)


def label_spreading(
    indices, weights, labels, num_classes, *, alpha=0.2, max_iterations=30, tol=1e-3
):
    """Label spreading scores on a (directed) padded neighbour list.

    Args:
      indices: `[N, k]` int32 neighbour lists, −1 for padding; self entries are
        ignored.
      weights: `[N, k]` float32 ≥ 0 affinities W_ij, or None for connectivity
        (1 for every listed edge).
      labels: `[N]` int32, class in [0, C) or −1 for unlabeled.
      num_classes: Python int C.
      alpha: Python float in (0, 1), how much a node takes from its neighbours
        rather than its own label.
      max_iterations: Python int ≥ 1, cap on sweeps.
      tol: Python float ≥ 0, stop when the L1 change of F over all entries is
        below it.

    Returns:
      `[N, C]` float32 in [0, 1], F with rows normalised to sum 1 (rows that
      received no label mass stay 0).
    """
    indices = tf.cast(tf.convert_to_tensor(indices), tf.int32)
    if weights is None:
        weights = tf.ones(tf.shape(indices), tf.float32)
    weights = tf.cast(tf.convert_to_tensor(weights), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    num_classes = int(num_classes)
    _check_labels(labels, num_classes)
    return _label_spreading_compiled(
        indices,
        weights,
        labels,
        num_classes,
        tf.constant(alpha, tf.float32),
        tf.constant(max_iterations),
        tf.constant(tol, tf.float32),
    )
