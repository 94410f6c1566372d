"""Exact k-nearest-neighbour graphs as padded neighbour lists.

The graph of `[N, d]` embeddings is built in row blocks: each block of queries
gets its `[block, N]` squared distances from one matmul, and its k nearest
columns from a two-stage `top_k` (the k nearest points lie in the k column
chunks with the smallest chunk minima, so `top_k` scans N / chunk values
instead of N). Memory is O(N·k + block·N); no N×N matrix is ever formed. The
distances of the selected neighbours are then recomputed exactly from the
coordinates (the matmul expansion loses precision), and each row is sorted by
them.

Neighbour lists use the padding convention shared by `graph`: index −1 and
strength/distance 0 mean "no edge".
"""

import math
import typing

import tensorflow as tf

from i2a_tf.density import distances
from i2a_tf.density import kde

# Columns per chunk of the first `top_k` stage; measured fastest among 8–64
# for N = 20k–100k on AVX-512 CPUs.
_CHUNK_COLUMNS = 32


class KnnGraph(typing.NamedTuple):
    """A kNN graph with the leave-one-out KDE density of every node.

    indices: `[N, k]` int32, neighbours of each node, nearest first, self excluded.
    distances: `[N, k]` float32 ≥ 0, Euclidean distance to each neighbour.
    node_log_densities: `[N]` float32, leave-one-out Gaussian KDE log-density
      of each node against all other nodes (see
      `density.leave_one_out_kde_log_prob`).
    """

    indices: tf.Tensor
    distances: tf.Tensor
    node_log_densities: tf.Tensor


@tf.function(jit_compile=True)
def _knn_compiled(embeddings, k, block_rows, half_precision, with_density):
    num_nodes, dim = embeddings.shape
    centred = embeddings - tf.reduce_mean(embeddings, axis=0)
    squared_norms = tf.reduce_sum(tf.square(centred), axis=1)
    num_chunks = -(-num_nodes // _CHUNK_COLUMNS)
    padded_columns = num_chunks * _CHUNK_COLUMNS
    # Padding columns get +inf squared norm, hence +inf distance: never chosen.
    bank = tf.pad(centred, [[0, padded_columns - num_nodes], [0, 0]])
    bank_squared_norms = tf.concat(
        [squared_norms, tf.fill([padded_columns - num_nodes], math.inf)], axis=0
    )
    column_ids = tf.range(padded_columns, dtype=tf.int32)
    chunk_offsets = tf.range(_CHUNK_COLUMNS, dtype=tf.int32)
    candidate_chunks = min(k, num_chunks)

    def block_fn(block):
        block_queries, block_squared_norms, block_ids, block_points = block
        distances_sq = distances.squared_distances(
            block_queries, bank, block_squared_norms, bank_squared_norms
        )
        # Self is excluded by index: under rounding, a duplicate or a very
        # close point can come out nearer than self.
        distances_sq = tf.where(column_ids[None, :] == block_ids[:, None], math.inf, distances_sq)
        chunked = tf.reshape(distances_sq, [-1, num_chunks, _CHUNK_COLUMNS])
        chunk_minima = tf.reduce_min(chunked, axis=2)
        _, best_chunks = tf.math.top_k(-chunk_minima, candidate_chunks)
        candidates = tf.reshape(
            tf.gather(chunked, best_chunks, batch_dims=1), [-1, candidate_chunks * _CHUNK_COLUMNS]
        )
        candidate_ids = tf.reshape(
            best_chunks[:, :, None] * _CHUNK_COLUMNS + chunk_offsets[None, None, :],
            [-1, candidate_chunks * _CHUNK_COLUMNS],
        )
        _, positions = tf.math.top_k(-candidates, k)
        neighbour_ids = tf.gather(candidate_ids, positions, batch_dims=1)
        # Uncentred coordinates: duplicates then differ by exactly 0.
        differences = block_points[:, None, :] - tf.gather(embeddings, neighbour_ids)
        exact_distances = tf.sqrt(tf.reduce_sum(tf.square(differences), axis=2))
        negated_sorted, order = tf.math.top_k(-exact_distances, k)
        neighbour_ids = tf.gather(neighbour_ids, order, batch_dims=1)
        if with_density:
            # The largest kernel term is the nearest neighbour's, known from the
            # chunk minima, so the log-sum-exp needs one pass over the block.
            nearest_sq = tf.reduce_min(chunk_minima, axis=1)
            log_kernel_sums = -nearest_sq * half_precision + tf.math.log(
                tf.reduce_sum(
                    tf.exp(-(distances_sq - nearest_sq[:, None]) * half_precision), axis=1
                )
            )
        else:
            log_kernel_sums = tf.zeros_like(block_squared_norms)
        return neighbour_ids, -negated_sorted, log_kernel_sums

    block_rows = min(block_rows, num_nodes)
    neighbour_ids, neighbour_distances, log_kernel_sums = distances.map_row_blocks(
        block_fn,
        (centred, squared_norms, tf.range(num_nodes, dtype=tf.int32), embeddings),
        block_rows,
        (
            tf.TensorSpec([block_rows, k], tf.int32),
            tf.TensorSpec([block_rows, k], tf.float32),
            tf.TensorSpec([block_rows], tf.float32),
        ),
    )
    bandwidth = tf.sqrt(0.5 / half_precision)
    log_normaliser = -0.5 * dim * (
        math.log(2.0 * math.pi) + 2.0 * tf.math.log(bandwidth)
    ) - math.log(num_nodes - 1)
    return neighbour_ids, neighbour_distances, log_kernel_sums + log_normaliser


def _check_k(embeddings, k):
    num_nodes = embeddings.shape[0]
    if embeddings.shape.rank != 2 or num_nodes is None or embeddings.shape[1] is None:
        raise ValueError(
            f"embeddings must be a [N, d] array of static shape, got {embeddings.shape}"
        )
    if not 1 <= k <= num_nodes - 1:
        raise ValueError(f"k must be in [1, N − 1] = [1, {num_nodes - 1}], got {k}")


def _block_rows(num_nodes, block_elements):
    padded_columns = distances.ceil_to_multiple(num_nodes, _CHUNK_COLUMNS)
    return distances.rows_per_block(num_nodes, padded_columns, block_elements)


def knn_graph(embeddings, k, *, block_elements=None):
    """Exact k-nearest-neighbour lists (Euclidean), self excluded.

    Args:
      embeddings: `[N, d]` float32 (NumPy or tensor), static shape.
      k: Python int in [1, N − 1], neighbours per node.
      block_elements: optional Python int, element budget of one
        `[block, N]` distance block (default 2**24).

    Returns:
      `(indices, distances)`: `[N, k]` int32 neighbour ids sorted by increasing
      distance (self never listed, even when a duplicate point is at distance
      0), and `[N, k]` float32 ≥ 0 Euclidean distances recomputed exactly
      from the coordinates. Among exactly tied neighbours the choice is
      arbitrary.
    """
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    k = int(k)
    _check_k(embeddings, k)
    indices, neighbour_distances, _ = _knn_compiled(
        embeddings, k, _block_rows(embeddings.shape[0], block_elements), tf.constant(1.0), False
    )
    return indices, neighbour_distances


def knn_graph_with_density(embeddings, k, bandwidth, *, block_elements=None):
    """kNN lists and leave-one-out KDE node densities from one pass over the data.

    Both need the same `[block, N]` squared distances, so the density costs one
    extra exp per distance instead of a second matmul pass.

    Args:
      embeddings: `[N, d]` float32, static shape.
      k: Python int in [1, N − 1].
      bandwidth: scalar float32 > 0, Gaussian kernel std `h`.
      block_elements: optional Python int, element budget per block.

    Returns:
      `KnnGraph` (indices, distances as `knn_graph`; node_log_densities `[N]`
      float32 = `log( (1/(N−1)) Σ_{j≠i} N(x_i; x_j, h² I) )`).
    """
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    k = int(k)
    _check_k(embeddings, k)
    bandwidth = tf.maximum(tf.cast(bandwidth, tf.float32), kde.MIN_BANDWIDTH)
    return KnnGraph(
        *_knn_compiled(
            embeddings,
            k,
            _block_rows(embeddings.shape[0], block_elements),
            0.5 / tf.square(bandwidth),
            True,
        )
    )


def symmetrize_knn_graph(indices, strengths):
    """Union of each edge with its reverse, as a padded neighbour list.

    Edge `i — indices[i, j]` (strength `strengths[i, j]`) is listed in the
    rows of both endpoints; where both directions were present, the larger
    strength is kept. Self loops and entries with index −1 are dropped.

    Args:
      indices: `[N, k]` int32, neighbour ids, −1 for padding.
      strengths: `[N, k]` float32 ≥ 0, edge strengths (or distances: any
        per-edge value for which "larger wins" is the wanted merge).

    Returns:
      `(indices, strengths)` of shape `[N, k']`, k' = the largest degree of the
      symmetrised graph (k ≤ k' ≤ N − 1): each row lists its neighbours in
      increasing id order, then padding (index −1, strength 0). Runs eagerly or
      in `tf.function` (k' depends on the data, so not under XLA).
    """
    indices = tf.cast(tf.convert_to_tensor(indices), tf.int32)
    strengths = tf.cast(tf.convert_to_tensor(strengths), tf.float32)
    num_nodes = tf.shape(indices, out_type=tf.int64)[0]
    sources = tf.repeat(tf.range(num_nodes), tf.shape(indices, out_type=tf.int64)[1])
    targets = tf.cast(tf.reshape(indices, [-1]), tf.int64)
    edge_strengths = tf.reshape(strengths, [-1])
    keep = tf.logical_and(targets >= 0, targets != sources)
    sources, targets, edge_strengths = (
        tf.boolean_mask(t, keep) for t in (sources, targets, edge_strengths)
    )
    both_sources = tf.concat([sources, targets], axis=0)
    both_targets = tf.concat([targets, sources], axis=0)
    both_strengths = tf.concat([edge_strengths, edge_strengths], axis=0)
    edge_keys, edge_ids = tf.unique(both_sources * num_nodes + both_targets)
    merged_strengths = tf.math.unsorted_segment_max(
        both_strengths, edge_ids, tf.shape(edge_keys)[0]
    )
    order = tf.argsort(edge_keys)
    edge_keys = tf.gather(edge_keys, order)
    merged_strengths = tf.gather(merged_strengths, order)
    rows = edge_keys // num_nodes
    columns = tf.cast(edge_keys % num_nodes, tf.int32)
    degrees = tf.math.bincount(rows, minlength=num_nodes, maxlength=num_nodes, dtype=tf.int64)
    max_degree = tf.reduce_max(degrees)
    row_starts = tf.cumsum(degrees, exclusive=True)
    slots = tf.range(tf.shape(edge_keys, out_type=tf.int64)[0]) - tf.gather(row_starts, rows)
    positions = tf.stack([rows, slots], axis=1)
    shape = tf.stack([num_nodes, max_degree])
    padded_indices = tf.tensor_scatter_nd_update(
        tf.fill(shape, tf.constant(-1, tf.int32)), positions, columns
    )
    padded_strengths = tf.tensor_scatter_nd_update(tf.zeros(shape), positions, merged_strengths)
    return padded_indices, padded_strengths
