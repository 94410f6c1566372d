"""Edge strengths of the pseudo-label graph from KDE densities.

An edge is strong where the data are dense along it, so that a widest
(bottleneck) path stays inside dense regions. Two estimates (the `mode`):

- "midpoint": the KDE of all embeddings at the edge midpoint (x_i + x_j) / 2.
  An edge that jumps a low-density gap between two clusters is weak even if
  both endpoints are dense. Costs one KDE query per edge: O(N·k·N·d) time.
- "min_endpoint": the smaller of the two endpoints' leave-one-out KDE
  densities. Free once the node densities exist (they come out of the kNN pass,
  `knn.knn_graph_with_density`), but blind to gaps between dense endpoints.

Log-densities become strengths by `log_density_to_strength`: the density's
quantile among the nodes' own densities, in (0, 1]. Widest paths only compare
strengths (order) and treat 0 as "no edge"; quantiles also give a selection
threshold a meaning that does not move with the extremes of the data ("the
best path never drops below the 30 % least dense nodes" is threshold 0.3),
where a density relative to the densest node would shift with a single
outlier.
"""

import math

import tensorflow as tf

from i2a_tf.density import kde

EDGE_STRENGTH_MODES = ("midpoint", "min_endpoint")


def log_density_to_strength(log_densities, reference_log_densities, valid=None):
    """Density quantile of each value among finite reference log-densities.

    `s = (1 + #{r : r ≤ v}) / (1 + R)` over the R finite reference values r, so
    s ∈ (0, 1] for every finite v (1 when v is at least the largest r, 1/(1+R)
    below the smallest): monotone non-decreasing in v, never 0 for a real edge.
    −inf and invalid entries map to 0 ("no edge").

    Args:
      log_densities: float32 tensor of any shape, log p (may hold −inf).
      reference_log_densities: `[R']` float32, e.g. the nodes' leave-one-out
        log-densities (non-finite entries are ignored).
      valid: optional bool tensor shaped like `log_densities`.

    Returns:
      float32 tensor shaped like `log_densities`, in [0, 1].
    """
    log_densities = tf.cast(tf.convert_to_tensor(log_densities), tf.float32)
    reference = tf.reshape(
        tf.cast(tf.convert_to_tensor(reference_log_densities), tf.float32), [-1])
    finite_reference = tf.math.is_finite(reference)
    # Non-finite references sort to the end as +inf and are never counted.
    ordered = tf.sort(tf.where(finite_reference, reference, math.inf))
    num_finite = tf.reduce_sum(tf.cast(finite_reference, tf.float32))
    at_or_below = tf.searchsorted(ordered, tf.reshape(log_densities, [-1]), side="right")
    quantiles = (1.0 + tf.cast(at_or_below, tf.float32)) / (1.0 + num_finite)
    quantiles = tf.reshape(quantiles, tf.shape(log_densities))
    usable = tf.math.is_finite(log_densities)
    if valid is not None:
        usable = tf.logical_and(usable, tf.cast(valid, tf.bool))
    return tf.where(usable, quantiles, 0.0)


def min_endpoint_edge_strengths(indices, node_log_densities):
    """Strength of edge `i — indices[i, j]` = min of its endpoints' strengths.

    Args:
      indices: `[N, k]` int32 neighbour ids, −1 for padding.
      node_log_densities: `[N]` float32, log-density of each node (e.g.
        leave-one-out KDE; −inf allowed).

    Returns:
      `[N, k]` float32 in [0, 1], `min(s(log p_i), s(log p_{indices[i,j]}))` with
      `s` the quantile among the node densities (`log_density_to_strength`;
      min commutes with the monotone map); 0 for padding.
    """
    indices = tf.cast(tf.convert_to_tensor(indices), tf.int32)
    node_strengths = log_density_to_strength(node_log_densities, node_log_densities)
    listed = indices >= 0
    neighbour_strengths = tf.gather(node_strengths, tf.maximum(indices, 0))
    strengths = tf.minimum(node_strengths[:, None], neighbour_strengths)
    return tf.where(listed, strengths, 0.0)


def midpoint_edge_strengths(embeddings, indices, bandwidth, node_log_densities=None, *,
                            block_elements=None):
    """Strength of edge `i — indices[i, j]` from the KDE at its midpoint.

    Args:
      embeddings: `[N, d]` float32, the KDE bank and the graph's nodes.
      indices: `[N, k]` int32 neighbour ids, −1 for padding.
      bandwidth: scalar float32 > 0, kernel std `h`.
      node_log_densities: optional `[N]` float32 leave-one-out node densities,
        the reference of the quantiles (computed here when absent).
      block_elements: optional Python int, element budget per KDE block.

    Returns:
      `[N, k]` float32 in [0, 1], the quantile of
      `kde_log_prob((x_i + x_j) / 2, embeddings, h)` among the node densities
      (`log_density_to_strength`); 0 for padding. Holds the `[N·k, d]`
      midpoints in memory.
    """
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    if node_log_densities is None:
        node_log_densities = kde.leave_one_out_kde_log_prob(
            embeddings, bandwidth, block_elements=block_elements)
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
    return log_density_to_strength(midpoint_log_densities, node_log_densities, valid=listed)


def edge_strengths(embeddings, indices, bandwidth, mode="midpoint", node_log_densities=None,
                   *, block_elements=None):
    """Edge strengths by `mode` (see the module docstring).

    Args:
      embeddings: `[N, d]` float32.
      indices: `[N, k]` int32 neighbour ids, −1 for padding.
      bandwidth: scalar float32 > 0, kernel std `h`.
      mode: Python str in `EDGE_STRENGTH_MODES`.
      node_log_densities: optional `[N]` float32 leave-one-out node densities
        (computed here when absent).
      block_elements: optional Python int, element budget per KDE block.

    Returns:
      `[N, k]` float32 in [0, 1], 0 for padding.
    """
    if mode == "midpoint":
        return midpoint_edge_strengths(embeddings, indices, bandwidth, node_log_densities,
                                       block_elements=block_elements)
    if mode == "min_endpoint":
        if node_log_densities is None:
            node_log_densities = kde.leave_one_out_kde_log_prob(
                embeddings, bandwidth, block_elements=block_elements)
        return min_endpoint_edge_strengths(indices, node_log_densities)
    raise ValueError(f"unknown edge strength mode {mode!r}; expected one of {EDGE_STRENGTH_MODES}")
