"""Balanced partition of embeddings into lists of neighbouring points.

The coarse quantizer of the approximate kNN graph (`knn.knn_graph` with an
`ApproximateSearch`). A principal-axis tree: starting from all N points, every
node is split at the median of its points' projections on the node's leading
principal direction, `levels` times, giving `2**levels` lists (leaves). The
principal direction comes from a few power iterations on an evenly spaced
sample of the node (at most `_SAMPLE_POINTS` points), started from a seeded
random vector, so a level costs O(N·d) whatever the number of nodes.

Median splits keep the lists balanced by construction: node j of level l
holds the positions `[⌊jN/2^l⌋, ⌊(j+1)N/2^l⌋)` of the current order, so every
list has ⌊N/L⌋ or ⌈N/L⌉ points and every shape is static (no k-means list
that swallows a dense region, no capacity to guess). The layout depends on N
only; the data only decide which point lands in which position.
"""

import tensorflow as tf

# Sample per node for its principal direction: enough to find the direction of
# largest spread, small enough that the top levels cost O(nodes · sample · d).
_SAMPLE_POINTS = 256
_POWER_ITERATIONS = 4


def num_levels(num_nodes, list_size):
    """Tree depth giving lists of at least `list_size` points.

    Args:
      num_nodes: Python int N ≥ 1.
      list_size: Python int ≥ 1, the smallest wanted list.

    Returns:
      Python int `levels` ≥ 0, the largest with `N / 2**levels ≥ list_size`
      (0 when N < 2·list_size: one list of everything).
    """
    levels = 0
    while num_nodes // 2 ** (levels + 1) >= list_size:
        levels += 1
    return levels


def _node_of_positions(num_nodes, num_splits):
    """`[N]` int32: node j of a level with `num_splits` nodes holds positions
    `[⌊jN/S⌋, ⌊(j+1)N/S⌋)`, so position p is in node `⌊((p + 1)·S − 1) / N⌋`."""
    positions = tf.range(1, num_nodes + 1, dtype=tf.int64)
    return tf.cast((positions * num_splits - 1) // num_nodes, tf.int32)


def _node_starts(num_nodes, num_splits):
    """`[S + 1]` int64, first position of each node, then N."""
    return tf.range(num_splits + 1, dtype=tf.int64) * num_nodes // num_splits


def _principal_directions(ordered_points, num_nodes, num_splits, seed, level):
    """`[S, d]` unit leading principal directions of the nodes of one level."""
    dim = ordered_points.shape[1]
    starts = _node_starts(num_nodes, num_splits)
    sizes = starts[1:] - starts[:-1]
    sample_size = min(_SAMPLE_POINTS, -(-num_nodes // num_splits))
    # Evenly spaced positions inside each node (repeats in nodes smaller than
    # the sample only reweight it).
    offsets = tf.range(sample_size, dtype=tf.int64)[None, :] * sizes[:, None] // sample_size
    sample = tf.gather(ordered_points, starts[:-1, None] + offsets)
    sample = sample - tf.reduce_mean(sample, axis=1, keepdims=True)
    directions = tf.random.stateless_normal([num_splits, dim], seed=[seed, level])
    for _ in range(_POWER_ITERATIONS):
        directions = tf.einsum("snd,sn->sd", sample, tf.einsum("snd,sd->sn", sample, directions))
        directions = tf.math.l2_normalize(directions, axis=1)
    return directions


def _split_level(order, points, num_splits, seed, level):
    """Reorders the points of every node by their projection on its direction."""
    num_nodes = points.shape[0]
    ordered_points = tf.gather(points, order)
    directions = _principal_directions(ordered_points, num_nodes, num_splits, seed, level)
    nodes = _node_of_positions(num_nodes, num_splits)
    projections = tf.reduce_sum(ordered_points * tf.gather(directions, nodes), axis=1)
    lowest = tf.math.unsorted_segment_min(projections, nodes, num_splits)
    highest = tf.math.unsorted_segment_max(projections, nodes, num_splits)
    spans = tf.maximum(tf.gather(highest - lowest, nodes), 1e-30)
    # Node first, projection second, as one float64 key: the fraction of the
    # node's span in [0, 0.5] leaves ≥ 30 bits below any node id < 2**22.
    keys = tf.cast(nodes, tf.float64) + 0.5 * tf.cast(
        (projections - tf.gather(lowest, nodes)) / spans, tf.float64
    )
    return tf.gather(order, tf.argsort(keys, stable=True))


def balanced_lists(points, levels, seed):
    """Points grouped into `2**levels` balanced lists of neighbouring points.

    Traceable inside `tf.function(jit_compile=True)`.

    Args:
      points: `[N, d]` float32, static shape, centred (the power iterations
        are on centred samples, so any offset works; centring keeps float32
        projections precise).
      levels: Python int ≥ 0, tree depth (`num_levels`).
      seed: Python int, seed of the power iterations' start vectors.

    Returns:
      `[L, C]` int32 point ids, L = 2**levels lists of C = ⌈N/L⌉ slots; list
      j holds ⌊N/L⌋ or ⌈N/L⌉ points and empty slots hold N. Every point is in
      exactly one list. Deterministic for a given seed.
    """
    num_nodes = points.shape[0]
    order = tf.range(num_nodes, dtype=tf.int32)
    for level in range(levels):
        order = _split_level(order, points, 2**level, seed, level)
    num_lists = 2**levels
    capacity = -(-num_nodes // num_lists)
    lists = _node_of_positions(num_nodes, num_lists)
    starts = _node_starts(num_nodes, num_lists)
    slots = tf.range(num_nodes, dtype=tf.int64) - tf.gather(starts, lists)
    return tf.tensor_scatter_nd_update(
        tf.fill([num_lists, capacity], num_nodes),
        tf.stack([tf.cast(lists, tf.int64), slots], axis=1),
        order,
    )
