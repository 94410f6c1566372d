"""Balanced partition of embeddings into lists of neighbouring points.

The coarse quantizer of the approximate kNN graph (`knn.knn_graph` with an
`ApproximateSearch`). A principal-axis tree: starting from all N points, every
node is split at the median of its points' projections on the node's leading
principal direction, `levels` times, giving L = `2**levels` lists (leaves).
The principal direction comes from a few power iterations on an evenly spaced
sample of the node (at most `_SAMPLE_POINTS` points), started from a seeded
random vector, so a level costs O(N·d) whatever the number of nodes.

The N points are padded with D = L·⌈N/L⌉ − N < L placeholders (id N) so that
every node of a level has the same size and a level is one batched row sort
(`[nodes, size]`, float32), not a sort of all N keys. Placeholder i sorts
first (key −inf) or last (+inf) at level l as bit l of i is 0 or 1, so the
placeholders go to distinct leaves and every list holds ⌊N/L⌋ or ⌈N/L⌉
points: every shape is static (no k-means list that swallows a dense region,
no capacity to guess). The layout depends on N only; the data only decide
which point lands in which position.
"""

import math

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


def _principal_directions(node_points, is_point, seed, level):
    """`[S, d]` unit leading principal directions of the S nodes of one level.

    Args:
      node_points: `[S, n, d]` float32, the points of each node.
      is_point: `[S, n]` bool, False for placeholders (left out of the sample).
    """
    num_splits, size, dim = node_points.shape
    sample_size = min(_SAMPLE_POINTS, size)
    # Evenly spaced positions inside each node.
    offsets = tf.range(sample_size) * size // sample_size
    sample = tf.gather(node_points, offsets, axis=1)
    weights = tf.cast(tf.gather(is_point, offsets, axis=1), tf.float32)[:, :, None]
    mean = tf.reduce_sum(sample * weights, axis=1, keepdims=True) / tf.maximum(
        tf.reduce_sum(weights, axis=1, keepdims=True), 1.0
    )
    sample = (sample - mean) * weights
    directions = tf.random.stateless_normal([num_splits, dim], seed=[seed, level])
    for _ in range(_POWER_ITERATIONS):
        directions = tf.einsum("snd,sn->sd", sample, tf.einsum("snd,sd->sn", sample, directions))
        directions = tf.math.l2_normalize(directions, axis=1)
    return directions


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
    num_lists = 2**levels
    capacity = -(-num_nodes // num_lists)
    padded_size = num_lists * capacity
    # Row N of the padded points stands for every placeholder.
    padded_points = tf.pad(points, [[0, 1], [0, 0]])
    placeholder_keys = [
        tf.constant(
            [-math.inf if (i >> level) & 1 == 0 else math.inf
             for i in range(padded_size - num_nodes)],
            tf.float32,
        )
        for level in range(levels)
    ]
    order = tf.range(padded_size, dtype=tf.int32)
    for level in range(levels):
        num_splits = 2**level
        # Ids ≥ N are placeholders: order holds N + i for placeholder i.
        node_order = tf.reshape(order, [num_splits, -1])
        is_point = node_order < num_nodes
        node_points = tf.gather(padded_points, tf.minimum(node_order, num_nodes))
        directions = _principal_directions(node_points, is_point, seed, level)
        projections = tf.einsum("snd,sd->sn", node_points, directions)
        keys = tf.where(
            is_point,
            projections,
            tf.gather(placeholder_keys[level], tf.maximum(node_order - num_nodes, 0)),
        )
        order = tf.reshape(
            tf.gather(node_order, tf.argsort(keys, axis=1, stable=True), batch_dims=1), [-1]
        )
    return tf.reshape(tf.minimum(order, num_nodes), [num_lists, capacity])
