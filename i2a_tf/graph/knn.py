"""Exact and approximate k-nearest-neighbour graphs as padded neighbour lists.

Exact: the graph of `[N, d]` embeddings is built in row blocks: each block of
queries gets its `[block, N]` squared distances from one matmul, and its k
nearest columns from a two-stage `top_k` (the k nearest points lie in the k
column chunks with the smallest chunk minima, so `top_k` scans N / chunk
values instead of N). Memory is O(N·k + block·N); no N×N matrix is ever
formed; time O(N²·d).

Approximate (`ApproximateSearch`), an inverted-file search with balanced
lists, for N beyond what O(N²·d) allows:

1. `partition.balanced_lists` splits the points into L = 2**levels lists of
   `list_size` to 2·`list_size` neighbouring points (principal-axis median
   splits);
2. every list gets its `probes` nearest lists by centroid (itself first);
3. every point gets a home: the list with the nearest centroid (O(N·L·d),
   one small matmul per block);
4. points are grouped by home into chunks of half a list, and each chunk is
   compared with all points of its home's probed lists in one batched matmul:
   `[chunk, probes · list slots]` distances, the same two-stage selection.

Time O(N·(L + probes·list_size)·d); memory O(N·(k + d)) plus one block of
chunks and O(L·probes). L ≈ N / list_size grows with N, so step 3 is the one
term that grows as N²; at the defaults it stays below the search's up to
N ≈ 1M. (Looking for the home only among the lists two probe hops from a
point's own list is linear, but it misses exactly the points step 3 is for:
recall@10 fell from 0.95 to 0.89 at 20k with 8 probes.) Lists of equal size
keep every shape static (one XLA program) and the cost per chunk fixed. When
the probes cover all lists the candidates are all points and the result is
the exact graph.

Both: the distances of the selected neighbours are then recomputed exactly
from the coordinates (the matmul expansion loses precision), and each row is
sorted by them.

Neighbour lists use the padding convention shared by `graph`: index −1 and
strength/distance 0 mean "no edge".
"""

import math
import typing

import tensorflow as tf

from i2a_tf.density import distances
from i2a_tf.density import kde
from i2a_tf.graph import partition

# Columns per chunk of the first `top_k` stage; measured fastest among 8–64
# for N = 20k–100k on AVX-512 CPUs.
_CHUNK_COLUMNS = 32
# Element budget of one block of the approximate search (its `[chunks, list
# slots, probes · list slots]` distances plus `[chunks, probes · list slots,
# d]` candidate coordinates, ~4 MB): a block that stays in the CPU's caches
# between the gather, the matmul and the selection. At N = 20k, probes 16,
# the graph took 0.29 s with 2**20 against 0.42 s with 2**24 (2 cores,
# AVX-512); 2**19 was no faster. A smaller `block_elements` still wins.
_SEARCH_BLOCK_ELEMENTS = 2**20


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


def _nearest_columns(distances_sq, k):
    """Columns of the k smallest entries of each row, in two `top_k` stages.

    The k nearest columns lie in the k column chunks with the smallest chunk
    minima, so the second `top_k` scans k·chunk values instead of all columns.

    Args:
      distances_sq: `[rows, columns]` float32, columns a multiple of
        `_CHUNK_COLUMNS`; +inf never wins.
      k: Python int ≤ columns.

    Returns:
      `(columns [rows, k] int32, unordered; chunk_minima [rows, columns /
      _CHUNK_COLUMNS] float32)`.
    """
    num_chunks = distances_sq.shape[1] // _CHUNK_COLUMNS
    candidate_chunks = min(k, num_chunks)
    chunked = tf.reshape(distances_sq, [-1, num_chunks, _CHUNK_COLUMNS])
    chunk_minima = tf.reduce_min(chunked, axis=2)
    _, best_chunks = tf.math.top_k(-chunk_minima, candidate_chunks)
    candidates = tf.reshape(
        tf.gather(chunked, best_chunks, batch_dims=1), [-1, candidate_chunks * _CHUNK_COLUMNS]
    )
    candidate_columns = tf.reshape(
        best_chunks[:, :, None] * _CHUNK_COLUMNS
        + tf.range(_CHUNK_COLUMNS, dtype=tf.int32)[None, None, :],
        [-1, candidate_chunks * _CHUNK_COLUMNS],
    )
    _, positions = tf.math.top_k(-candidates, k)
    return tf.gather(candidate_columns, positions, batch_dims=1), chunk_minima


def _sorted_by_exact_distance(query_points, points, neighbour_ids):
    """Neighbours sorted by distances recomputed from the coordinates.

    A duplicate of a query differs from it by exactly 0 in any coordinates
    (centred or not) both were computed alike.

    Args:
      query_points: `[rows, d]` float32.
      points: `[M, d]` float32, the rows `neighbour_ids` index.
      neighbour_ids: `[rows, k]` int32.

    Returns:
      `(neighbour_ids [rows, k] int32, distances [rows, k] float32 ≥ 0)`, by
      increasing distance.
    """
    differences = query_points[:, None, :] - tf.gather(points, neighbour_ids)
    exact_distances = tf.sqrt(tf.reduce_sum(tf.square(differences), axis=2))
    negated_sorted, order = tf.math.top_k(-exact_distances, neighbour_ids.shape[1])
    return tf.gather(neighbour_ids, order, batch_dims=1), -negated_sorted


def _log_kernel_sums(distances_sq, chunk_minima, half_precision):
    """`[rows]` log Σ_j exp(−d²_j · half_precision) over each row, +inf terms 0.

    The largest kernel term is the nearest column's, known from the chunk
    minima, so the log-sum-exp needs one pass over the distances.
    """
    nearest_sq = tf.reduce_min(chunk_minima, axis=1)
    return -nearest_sq * half_precision + tf.math.log(
        tf.reduce_sum(tf.exp(-(distances_sq - nearest_sq[:, None]) * half_precision), axis=1)
    )


def _log_kde_normaliser(dim, num_nodes, half_precision):
    """log of the Gaussian kernel's normaliser over the N − 1 other nodes."""
    bandwidth = tf.sqrt(0.5 / half_precision)
    return -0.5 * dim * (
        math.log(2.0 * math.pi) + 2.0 * tf.math.log(bandwidth)
    ) - math.log(num_nodes - 1)


@tf.function(jit_compile=True)
def _knn_compiled(embeddings, k, block_rows, half_precision, with_density):
    num_nodes, dim = embeddings.shape
    centred = embeddings - tf.reduce_mean(embeddings, axis=0)
    squared_norms = tf.reduce_sum(tf.square(centred), axis=1)
    padded_columns = distances.ceil_to_multiple(num_nodes, _CHUNK_COLUMNS)
    # Padding columns get +inf squared norm, hence +inf distance: never chosen.
    bank = tf.pad(centred, [[0, padded_columns - num_nodes], [0, 0]])
    bank_squared_norms = tf.concat(
        [squared_norms, tf.fill([padded_columns - num_nodes], math.inf)], axis=0
    )
    column_ids = tf.range(padded_columns, dtype=tf.int32)

    def block_fn(block):
        block_queries, block_squared_norms, block_ids, block_points = block
        distances_sq = distances.squared_distances(
            block_queries, bank, block_squared_norms, bank_squared_norms
        )
        # Self is excluded by index: under rounding, a duplicate or a very
        # close point can come out nearer than self.
        distances_sq = tf.where(column_ids[None, :] == block_ids[:, None], math.inf, distances_sq)
        neighbour_ids, chunk_minima = _nearest_columns(distances_sq, k)
        neighbour_ids, neighbour_distances = _sorted_by_exact_distance(
            block_points, embeddings, neighbour_ids
        )
        if with_density:
            log_kernel_sums = _log_kernel_sums(distances_sq, chunk_minima, half_precision)
        else:
            log_kernel_sums = tf.zeros_like(block_squared_norms)
        return neighbour_ids, neighbour_distances, log_kernel_sums

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
    return (
        neighbour_ids,
        neighbour_distances,
        log_kernel_sums + _log_kde_normaliser(dim, num_nodes, half_precision),
    )


class ApproximateSearch(typing.NamedTuple):
    """Settings of the approximate kNN search (see the module docstring).

    list_size: Python int > k, the smallest number of points per list; the
      points are split into 2**levels balanced lists of `list_size` to
      2·`list_size` points (one list when N < 2·`list_size`).
    probes: Python int ≥ 1, lists scanned per point: its home (the list with
      the nearest centroid) and the `probes − 1` lists whose centroids are
      nearest to the home's. Scanning all lists (probes ≥ their number) gives
      the exact graph.
    seed: Python int, seed of the partition (the result is deterministic for a
      given seed).
    """

    list_size: int = 128
    probes: int = 10
    seed: int = 0


def _nearest_lists(centroids, probes, block_elements):
    """`[L, P]` int32: each list itself first, then the P − 1 nearest lists by
    centroid distance (blocked: memory O(block + L·P), not O(L²))."""
    num_lists = centroids.shape[0]
    squared_norms = tf.reduce_sum(tf.square(centroids), axis=1)
    list_ids = tf.range(num_lists, dtype=tf.int32)

    def block_fn(block):
        block_centroids, block_squared_norms, block_ids = block
        distances_sq = distances.squared_distances(
            block_centroids, centroids, block_squared_norms, squared_norms
        )
        # −1 < every squared distance: a list always scans itself.
        distances_sq = tf.where(list_ids[None, :] == block_ids[:, None], -1.0, distances_sq)
        return tf.math.top_k(-distances_sq, probes)[1]

    block_rows = distances.rows_per_block(num_lists, num_lists, block_elements)
    return distances.map_row_blocks(
        block_fn,
        (centroids, squared_norms, list_ids),
        block_rows,
        tf.TensorSpec([block_rows, probes], tf.int32),
    )


def _nearest_centroids(queries, centroids, block_elements):
    """`[M]` int32, the nearest centroid of each query (blocked)."""
    squared_norms = tf.reduce_sum(tf.square(centroids), axis=1)

    def block_fn(block_queries):
        distances_sq = distances.squared_distances(
            block_queries[0], centroids, bank_squared_norms=squared_norms
        )
        return tf.argmin(distances_sq, axis=1, output_type=tf.int32)

    block_rows = distances.rows_per_block(queries.shape[0], centroids.shape[0], block_elements)
    return distances.map_row_blocks(
        block_fn, (queries,), block_rows, tf.TensorSpec([block_rows], tf.int32)
    )


def _query_chunks(homes, num_lists, chunk_size):
    """Queries grouped by home list into chunks of `chunk_size` slots.

    Args:
      homes: `[N]` int32 in [0, L), the home list of each query.
      num_lists: Python int L.
      chunk_size: Python int Q ≥ 1.

    Returns:
      `(chunks [S, Q] int32 query ids, N in empty slots; chunk_homes [S]
      int32)`. A home with n queries fills ⌈n/Q⌉ chunks, so S = ⌊N/Q⌋ + L
      slots always suffice; unused chunks come last, empty, with home L − 1.
    """
    num_nodes = homes.shape[0]
    num_chunks = num_nodes // chunk_size + num_lists
    order = tf.argsort(homes, stable=True)
    sorted_homes = tf.gather(homes, order)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(homes), homes, num_lists)
    home_chunks = (counts + chunk_size - 1) // chunk_size
    chunk_ends = tf.cumsum(home_chunks)
    # Rank of each query among the queries of its home, in id order.
    ranks = tf.range(num_nodes, dtype=tf.int32) - tf.gather(
        tf.cumsum(counts, exclusive=True), sorted_homes
    )
    chunk_ids = tf.gather(chunk_ends - home_chunks, sorted_homes) + ranks // chunk_size
    chunks = tf.tensor_scatter_nd_update(
        tf.fill([num_chunks, chunk_size], num_nodes),
        tf.stack([chunk_ids, ranks % chunk_size], axis=1),
        order,
    )
    chunk_homes = tf.minimum(
        tf.searchsorted(chunk_ends, tf.range(num_chunks, dtype=tf.int32), side="right"),
        num_lists - 1,
    )
    return chunks, chunk_homes


@tf.function(jit_compile=True)
def _approximate_knn_compiled(
    embeddings, k, levels, probes, seed, block_elements, half_precision, with_density
):
    num_nodes, dim = embeddings.shape
    centred = embeddings - tf.reduce_mean(embeddings, axis=0)
    lists = partition.balanced_lists(centred, levels, seed)
    # Empty slots (id N) pad every list to whole chunks of the selection.
    capacity = distances.ceil_to_multiple(lists.shape[1], _CHUNK_COLUMNS)
    lists = tf.pad(lists, [[0, 0], [0, capacity - lists.shape[1]]], constant_values=num_nodes)
    num_lists = lists.shape[0]
    probes = min(probes, num_lists)
    # Row N stands for an empty slot: +inf squared norm as a candidate, so
    # never chosen; 0 as a query, whose row is dropped.
    bank = tf.pad(centred, [[0, 1], [0, 0]])
    squared_norms = tf.reduce_sum(tf.square(bank), axis=1)
    candidate_squared_norms = tf.tensor_scatter_nd_update(squared_norms, [[num_nodes]], [math.inf])
    filled = tf.cast(lists < num_nodes, tf.float32)
    centroids = tf.reduce_sum(tf.gather(bank, lists), axis=1) / tf.reduce_sum(
        filled, axis=1, keepdims=True
    )
    probed_lists = _nearest_lists(centroids, probes, block_elements)
    # A query scans the lists around its nearest centroid, not around the
    # centroid of the list the median split put it in: a balanced list can
    # hold a few points of a neighbouring cluster, whose neighbours lie in
    # that cluster's lists.
    chunk_size = max(1, capacity // 2)
    chunks, chunk_homes = _query_chunks(
        _nearest_centroids(centred, centroids, block_elements), num_lists, chunk_size
    )

    def search(query_ids, homes):
        block_chunks = query_ids.shape[0]
        candidate_ids = tf.reshape(
            tf.gather(lists, tf.gather(probed_lists, homes)), [block_chunks, -1]
        )
        queries = tf.gather(bank, query_ids)
        candidates = tf.gather(bank, candidate_ids)
        cross = tf.einsum("gqd,gcd->gqc", queries, candidates)
        distances_sq = tf.maximum(
            tf.gather(squared_norms, query_ids)[:, :, None]
            + tf.gather(candidate_squared_norms, candidate_ids)[:, None, :]
            - 2.0 * cross,
            0.0,
        )
        distances_sq = tf.where(
            candidate_ids[:, None, :] == query_ids[:, :, None], math.inf, distances_sq
        )
        distances_sq = tf.reshape(distances_sq, [block_chunks * chunk_size, probes * capacity])
        columns, chunk_minima = _nearest_columns(distances_sq, k)
        # Exact distances from the block's own (centred) coordinates: a
        # duplicate of the query still differs by exactly 0.
        neighbour_ids, neighbour_distances = _sorted_by_exact_distance(
            tf.reshape(queries, [block_chunks * chunk_size, dim]),
            tf.reshape(candidates, [block_chunks * probes * capacity, dim]),
            tf.reshape(
                tf.reshape(columns, [block_chunks, chunk_size, k])
                + (tf.range(block_chunks, dtype=tf.int32) * probes * capacity)[:, None, None],
                [block_chunks * chunk_size, k],
            ),
        )
        neighbour_ids = tf.gather(tf.reshape(candidate_ids, [-1]), neighbour_ids)
        if with_density:
            log_kernel_sums = _log_kernel_sums(distances_sq, chunk_minima, half_precision)
        else:
            log_kernel_sums = tf.zeros([block_chunks * chunk_size])
        return (
            tf.reshape(neighbour_ids, [block_chunks, chunk_size, k]),
            tf.reshape(neighbour_distances, [block_chunks, chunk_size, k]),
            tf.reshape(log_kernel_sums, [block_chunks, chunk_size]),
        )

    def block_fn(block):
        query_ids, homes = block
        # The unused chunks at the end hold no query: skip their search.
        return tf.cond(
            tf.reduce_any(query_ids < num_nodes),
            lambda: search(query_ids, homes),
            lambda: (
                tf.zeros(query_ids.shape + [k], tf.int32),
                tf.zeros(query_ids.shape + [k]),
                tf.zeros(query_ids.shape),
            ),
        )

    # A block holds its [chunks, chunk size, candidates] distances and its
    # [chunks, candidates, d] candidate coordinates.
    search_elements = min(block_elements, _SEARCH_BLOCK_ELEMENTS)
    block_chunks = max(
        1, min(chunks.shape[0], search_elements // (probes * capacity * (chunk_size + dim)))
    )
    by_slot = distances.map_row_blocks(
        block_fn,
        (chunks, chunk_homes),
        block_chunks,
        (
            tf.TensorSpec([block_chunks, chunk_size, k], tf.int32),
            tf.TensorSpec([block_chunks, chunk_size, k], tf.float32),
            tf.TensorSpec([block_chunks, chunk_size], tf.float32),
        ),
    )
    # Every point fills one slot; the empty slots (id N) sort last.
    slot_of_node = tf.argsort(tf.reshape(chunks, [-1]), stable=True)[:num_nodes]
    neighbour_ids, neighbour_distances, log_kernel_sums = (
        tf.gather(tf.reshape(values, [chunks.shape[0] * chunk_size, -1]), slot_of_node)
        for values in by_slot
    )
    return (
        neighbour_ids,
        neighbour_distances,
        log_kernel_sums[:, 0] + _log_kde_normaliser(dim, num_nodes, half_precision),
    )


def _check_k(embeddings, k):
    num_nodes = embeddings.shape[0]
    if embeddings.shape.rank != 2 or num_nodes is None or embeddings.shape[1] is None:
        raise ValueError(
            f"embeddings must be a [N, d] array of static shape, got {embeddings.shape}"
        )
    if not 1 <= k <= num_nodes - 1:
        raise ValueError(f"k must be in [1, N − 1] = [1, {num_nodes - 1}], got {k}")


def _check_approximate(approximate, k):
    if approximate.list_size <= k:
        raise ValueError(f"list_size must be > k = {k} (a list alone must hold k "
                         f"neighbours), got {approximate.list_size}")
    if approximate.probes < 1:
        raise ValueError(f"probes must be >= 1, got {approximate.probes}")


def _block_rows(num_nodes, block_elements):
    padded_columns = distances.ceil_to_multiple(num_nodes, _CHUNK_COLUMNS)
    return distances.rows_per_block(num_nodes, padded_columns, block_elements)


def _knn(embeddings, k, half_precision, with_density, block_elements, approximate):
    """Validates, then runs the exact or the approximate compiled search."""
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    k = int(k)
    _check_k(embeddings, k)
    if approximate is None:
        return _knn_compiled(
            embeddings,
            k,
            _block_rows(embeddings.shape[0], block_elements),
            half_precision,
            with_density,
        )
    _check_approximate(approximate, k)
    return _approximate_knn_compiled(
        embeddings,
        k,
        partition.num_levels(embeddings.shape[0], int(approximate.list_size)),
        int(approximate.probes),
        int(approximate.seed),
        block_elements or distances.DEFAULT_BLOCK_ELEMENTS,
        half_precision,
        with_density,
    )


def knn_graph(embeddings, k, *, block_elements=None, approximate=None):
    """k-nearest-neighbour lists (Euclidean), self excluded: exact or approximate.

    Args:
      embeddings: `[N, d]` float32 (NumPy or tensor), static shape.
      k: Python int in [1, N − 1], neighbours per node.
      block_elements: optional Python int, element budget of one
        `[block, N]` distance block (exact), or of one block of lists'
        `[lists, list slots, probes · list slots]` distances (approximate);
        default 2**24.
      approximate: None for the exact graph, or an `ApproximateSearch`: each
        node's neighbours are then searched only among the points of the
        lists its list probes (time O(N·probes·list_size·d), memory
        O(N·(k + d)) plus one block).

    Returns:
      `(indices, distances)`: `[N, k]` int32 neighbour ids sorted by increasing
      distance (self never listed, even when a duplicate point is at distance
      0), and `[N, k]` float32 ≥ 0 Euclidean distances recomputed exactly
      from the coordinates. Among exactly tied neighbours the choice is
      arbitrary. Approximate lists hold the k nearest among the scanned
      points, so a missed neighbour is replaced by a farther one.
    """
    indices, neighbour_distances, _ = _knn(
        embeddings, k, tf.constant(1.0), False, block_elements, approximate
    )
    return indices, neighbour_distances


def knn_graph_with_density(embeddings, k, bandwidth, *, block_elements=None, approximate=None):
    """kNN lists and leave-one-out KDE node densities from one pass over the data.

    Both need the same squared distances, so the density costs one extra exp
    per distance instead of a second matmul pass.

    Args:
      embeddings: `[N, d]` float32, static shape.
      k: Python int in [1, N − 1].
      bandwidth: scalar float32 > 0, Gaussian kernel std `h`.
      block_elements: optional Python int, element budget per block.
      approximate: None (exact) or an `ApproximateSearch` (see `knn_graph`).

    Returns:
      `KnnGraph` (indices, distances as `knn_graph`; node_log_densities `[N]`
      float32 = `log( (1/(N−1)) Σ_{j≠i} N(x_i; x_j, h² I) )`). Approximate:
      the sum runs over the scanned points only, a lower bound of the exact
      density that drops the far points' kernel terms (equal to it when the
      probes cover all lists).
    """
    bandwidth = tf.maximum(tf.cast(bandwidth, tf.float32), kde.MIN_BANDWIDTH)
    return KnnGraph(
        *_knn(embeddings, k, 0.5 / tf.square(bandwidth), True, block_elements, approximate)
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
