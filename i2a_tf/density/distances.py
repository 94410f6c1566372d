"""Pairwise squared Euclidean distances by the matmul expansion, in row blocks.

Both the KDE (`density.kde`) and the kNN graph (`graph.knn`) reduce a
`[queries, bank]` distance matrix row by row. Building the whole matrix at once
is what makes a naive KDE need gigabytes, so rows are processed in blocks whose
size is chosen from an element budget.
"""

import math

import tensorflow as tf

# 2**24 float32 elements (64 MiB) per block of the distance matrix: large enough
# for efficient matmuls, small enough that a few live temporaries of that size
# stay well inside memory on a 2-core / 24 GiB machine.
DEFAULT_BLOCK_ELEMENTS = 2**24


def squared_distances(queries, bank, query_squared_norms=None, bank_squared_norms=None):
    """Squared Euclidean distances by `|q|² + |b|² − 2 q·b`, clamped at 0.

    Args:
      queries: `[M, d]` float32.
      bank: `[N, d]` float32.
      query_squared_norms: optional `[M]` float32, `Σ_k queries[:, k]²`.
      bank_squared_norms: optional `[N]` float32, `Σ_k bank[:, k]²`; +inf
        marks padding columns (their distances become +inf).

    Returns:
      `[M, N]` float32 ≥ 0, `||q_i − b_j||²`. The expansion cancels
      catastrophically when points are far from the origin relative to their
      spread, and rounding can make it slightly negative (hence the clamp);
      callers centre both sets on a common mean first.
    """
    if query_squared_norms is None:
        query_squared_norms = tf.reduce_sum(tf.square(queries), axis=-1)
    if bank_squared_norms is None:
        bank_squared_norms = tf.reduce_sum(tf.square(bank), axis=-1)
    cross = tf.matmul(queries, bank, transpose_b=True)
    distances_sq = query_squared_norms[:, None] + bank_squared_norms[None, :] - 2.0 * cross
    return tf.maximum(distances_sq, 0.0)


def rows_per_block(num_rows, num_columns, block_elements=None):
    """Static number of query rows per block so a block holds ≤ `block_elements`.

    Args:
      num_rows: Python int or None, number of query rows M.
      num_columns: Python int or None, number of bank columns N (None: assume
        the budget allows 1024 rows).
      block_elements: Python int, element budget of one `[rows, N]` block
        (default `DEFAULT_BLOCK_ELEMENTS`).

    Returns:
      Python int in `[1, max(M, 1)]`.
    """
    block_elements = block_elements or DEFAULT_BLOCK_ELEMENTS
    rows = 1024 if not num_columns else max(1, block_elements // num_columns)
    if num_rows:
        rows = min(rows, num_rows)
    return max(1, rows)


def map_row_blocks(block_fn, row_tensors, block_rows, output_signature):
    """Applies `block_fn` to consecutive row blocks and concatenates the results.

    The last block is zero-padded to full size so every call sees the same static
    shape (one XLA compilation); padded output rows are dropped. Blocks run one
    after another (`parallel_iterations=1`) so only one block's temporaries are
    alive at a time, which is the point of blocking.

    Args:
      block_fn: callable taking a tuple of `[block_rows, ...]` tensors (one per
        entry of `row_tensors`) and returning a tensor or tuple of tensors with
        leading dimension `block_rows`.
      row_tensors: tuple of tensors sharing a leading dimension M.
      block_rows: Python int ≥ 1.
      output_signature: `tf.TensorSpec` or tuple of them, per-block outputs.

    Returns:
      Tensor or tuple of tensors with leading dimension M.
    """
    num_rows_static = row_tensors[0].shape[0]
    if num_rows_static is not None and num_rows_static <= block_rows:
        return block_fn(tuple(row_tensors))

    num_rows = tf.shape(row_tensors[0])[0]
    num_blocks = (num_rows + block_rows - 1) // block_rows
    pad_rows = num_blocks * block_rows - num_rows

    def to_blocks(tensor):
        padding = [[0, pad_rows]] + [[0, 0]] * (tensor.shape.rank - 1)
        padded = tf.pad(tensor, padding)
        return tf.reshape(
            padded, tf.concat([[num_blocks, block_rows], tf.shape(tensor)[1:]], axis=0)
        )

    blocked_outputs = tf.map_fn(
        block_fn,
        tuple(to_blocks(t) for t in row_tensors),
        fn_output_signature=output_signature,
        parallel_iterations=1,
    )

    def from_blocks(tensor):
        flat = tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], axis=0))
        return flat[:num_rows]

    return tf.nest.map_structure(from_blocks, blocked_outputs)


def ceil_to_multiple(value, multiple):
    """Smallest multiple of `multiple` ≥ `value` (Python ints)."""
    return int(math.ceil(value / multiple)) * multiple
