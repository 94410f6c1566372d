"""Edge strengths of the pseudo-label graph from KDE densities.

An edge is strong where the data are dense along it, so that a widest
(bottleneck) path stays inside dense regions. Two estimates (the `mode`):

- "midpoint": the KDE of all embeddings at the edge midpoint (x_i + x_j) / 2.
  An edge that jumps a low-density gap between two clusters is weak even if
  both endpoints are dense. Costs one KDE query per edge: O(N·k·N·d) time.
- "min_endpoint": the smaller of the two endpoints' leave-one-out KDE
  densities. Free once the node densities exist (they come out of the kNN pass,
  `knn.knn_graph_with_density`), but blind to gaps between dense endpoints.

Log-densities become strengths by `log_density_to_strength`, a monotone map to
[0, 1]: widest paths only compare strengths (order) and treat 0 as "no edge".
"""

import math

import tensorflow as tf

from i2a_tf.density import kde

EDGE_STRENGTH_MODES = ("midpoint", "min_endpoint")
# Finite log-densities are spread over at most this many nats before exp, so
# the weakest finite density maps to ≥ e^-80 ≈ 1.8e-35, above float32's
# smallest normal (1.2e-38): no real edge underflows to the "no edge" value 0.
MAX_LOG_RANGE = 80.0


def log_density_to_strength(log_densities, valid=None, max_log_range=MAX_LOG_RANGE):
    """Monotone, underflow-safe map of log-densities to strengths in [0, 1].

    `s = exp((log p − max log p) / scale)`, `scale = max(1, (max − min) / max_log_range)`,
    max and min over the finite valid entries: the relative density `p / p_max`
    when the finite values span at most `max_log_range` nats, otherwise the log
    range is compressed linearly so none underflows to 0. Order is preserved;
    −inf (and invalid entries) map to 0.

    Args:
      log_densities: float32 tensor of any shape, log p (may hold −inf).
      valid: optional bool tensor of the same shape; False entries map to 0
        and are ignored for max/min.
      max_log_range: Python float > 0.

    Returns:
      float32 tensor of the same shape, in [0, 1]; the largest valid finite
      entry maps to 1.
    """
    log_densities = tf.cast(tf.convert_to_tensor(log_densities), tf.float32)
    usable = tf.math.is_finite(log_densities)
    if valid is not None:
        usable = tf.logical_and(usable, tf.cast(valid, tf.bool))
    highest = tf.reduce_max(tf.where(usable, log_densities, -math.inf))
    lowest = tf.reduce_min(tf.where(usable, log_densities, math.inf))
    spread = tf.where(tf.reduce_any(usable), highest - lowest, 0.0)
    scale = tf.maximum(1.0, spread / max_log_range)
    shifted = tf.where(usable, log_densities - highest, 0.0) / scale
    return tf.where(usable, tf.exp(shifted), 0.0)


def min_endpoint_edge_strengths(indices, node_log_densities):
    """Strength of edge `i — indices[i, j]` = min of its endpoints' strengths.

    Args:
      indices: `[N, k]` int32 neighbour ids, −1 for padding.
      node_log_densities: `[N]` float32, log-density of each node (e.g.
        leave-one-out KDE; −inf allowed).

    Returns:
      `[N, k]` float32 in [0, 1], `min(s(log p_i), s(log p_{indices[i,j]}))` with
      `s = log_density_to_strength` over the node densities (min commutes with
      the monotone map); 0 for padding.
    """
    indices = tf.cast(tf.convert_to_tensor(indices), tf.int32)
    node_strengths = log_density_to_strength(node_log_densities)
    listed = indices >= 0
    neighbour_strengths = tf.gather(node_strengths, tf.maximum(indices, 0))
    strengths = tf.minimum(node_strengths[:, None], neighbour_strengths)
    return tf.where(listed, strengths, 0.0)


def midpoint_edge_strengths(embeddings, indices, bandwidth, *, block_elements=None):
    """Strength of edge `i — indices[i, j]` from the KDE at its midpoint.

    Args:
      embeddings: `[N, d]` float32, the KDE bank and the graph's nodes.
      indices: `[N, k]` int32 neighbour ids, −1 for padding.
      bandwidth: scalar float32 > 0, kernel std `h`.
      block_elements: optional Python int, element budget per KDE block.

    Returns:
      `[N, k]` float32 in [0, 1], `log_density_to_strength` of
      `kde_log_prob((x_i + x_j) / 2, embeddings, h)` over the listed edges;
      0 for padding. Holds the `[N·k, d]` midpoints in memory.
    """
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    indices = tf.cast(tf.convert_to_tensor(indices), tf.int32)
    listed = indices >= 0
    midpoints = 0.5 * (embeddings[:, None, :] + tf.gather(embeddings, tf.maximum(indices, 0)))
    midpoint_log_densities = kde.kde_log_prob(
        tf.reshape(midpoints, [-1, embeddings.shape[1]]),
        embeddings,
        bandwidth,
        block_elements=block_elements,
    )
    midpoint_log_densities = tf.reshape(midpoint_log_densities, tf.shape(indices))
    return log_density_to_strength(midpoint_log_densities, valid=listed)


def edge_strengths(embeddings, indices, bandwidth, mode="midpoint", node_log_densities=None):
    """Edge strengths by `mode` (see the module docstring).

    Args:
      embeddings: `[N, d]` float32.
      indices: `[N, k]` int32 neighbour ids, −1 for padding.
      bandwidth: scalar float32 > 0, kernel std `h`.
      mode: Python str in `EDGE_STRENGTH_MODES`.
      node_log_densities: optional `[N]` float32 leave-one-out node densities
        for "min_endpoint" (computed here when absent).

    Returns:
      `[N, k]` float32 in [0, 1], 0 for padding.
    """
    if mode == "midpoint":
        return midpoint_edge_strengths(embeddings, indices, bandwidth)
    if mode == "min_endpoint":
        if node_log_densities is None:
            node_log_densities = kde.leave_one_out_kde_log_prob(embeddings, bandwidth)
        return min_endpoint_edge_strengths(indices, node_log_densities)
    raise ValueError(f"unknown edge strength mode {mode!r}; expected one of {EDGE_STRENGTH_MODES}")
