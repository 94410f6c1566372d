"""Bandwidth rules for the isotropic Gaussian KDE (scalar kernel std `h`).

For an isotropic kernel the per-dimension spread is pooled into one scale,

    σ = sqrt( (1/d) Σ_k Var_k ),   Var_k the unbiased (ddof = 1) variance of
                                   dimension k over the n valid rows,

and the rules are the multivariate rules of thumb (Scott 1992; Silverman 1986)
with σ in place of the per-dimension std:

    scott:      h = σ · n^(−1/(d+4))
    silverman:  h = σ · (n (d + 2) / 4)^(−1/(d+4))
    median:     h = median_{i<j} ||x_i − x_j||   (the median heuristic, on at
                most `max_points` valid rows)
    fixed:      h = the given value.

All functions take an optional validity mask (fixed-size, partly filled banks),
run inside `tf.function(jit_compile=True)`, and return float32 tensors.
"""

import math

import tensorflow as tf

from i2a_tf.density import distances

BANDWIDTH_RULES = ("scott", "silverman", "median", "fixed")


def _rows_and_mask(rows, row_mask):
    rows = tf.cast(tf.convert_to_tensor(rows), tf.float32)
    if row_mask is None:
        row_mask = tf.ones(tf.shape(rows)[:1], tf.bool)
    return rows, tf.cast(tf.convert_to_tensor(row_mask), tf.bool)


def pooled_std(rows, row_mask=None):
    """Pooled standard deviation `σ = sqrt(mean_k Var_k)` (ddof = 1) of valid rows.

    Args:
      rows: `[n, d]` float32.
      row_mask: optional `[n]` bool, True for valid rows.

    Returns:
      Scalar float32 ≥ 0 (0 when fewer than two rows are valid).
    """
    rows, row_mask = _rows_and_mask(rows, row_mask)
    weights = tf.cast(row_mask, tf.float32)[:, None]
    count = tf.reduce_sum(weights)
    mean = tf.reduce_sum(rows * weights, axis=0) / tf.maximum(count, 1.0)
    squared_deviations = tf.reduce_sum(tf.square(rows - mean) * weights, axis=0)
    variances = squared_deviations / tf.maximum(count - 1.0, 1.0)
    return tf.sqrt(tf.reduce_mean(variances))


def _valid_count(row_mask):
    return tf.reduce_sum(tf.cast(row_mask, tf.float32))


def scott_bandwidth(rows, row_mask=None):
    """Scott's rule, `h = σ · n^(−1/(d+4))`.

    Args:
      rows: `[n, d]` float32 (static d).
      row_mask: optional `[n]` bool, True for valid rows (n counts these).

    Returns:
      Scalar float32 ≥ 0.
    """
    rows, row_mask = _rows_and_mask(rows, row_mask)
    dim = float(rows.shape[-1])
    count = tf.maximum(_valid_count(row_mask), 1.0)
    return pooled_std(rows, row_mask) * tf.pow(count, -1.0 / (dim + 4.0))


def silverman_bandwidth(rows, row_mask=None):
    """Silverman's rule, `h = σ · (n (d + 2) / 4)^(−1/(d+4))`.

    Args:
      rows: `[n, d]` float32 (static d).
      row_mask: optional `[n]` bool, True for valid rows.

    Returns:
      Scalar float32 ≥ 0.
    """
    rows, row_mask = _rows_and_mask(rows, row_mask)
    dim = float(rows.shape[-1])
    count = tf.maximum(_valid_count(row_mask), 1.0)
    return pooled_std(rows, row_mask) * tf.pow(count * (dim + 2.0) / 4.0, -1.0 / (dim + 4.0))


def median_heuristic_bandwidth(rows, row_mask=None, max_points=1000):
    """Median heuristic, `h = median_{i<j} ||x_i − x_j||` over valid rows.

    Only the first `max_points` valid rows (in row order) are used, so the cost
    is O(max_points²) whatever n is.

    Args:
      rows: `[n, d]` float32.
      row_mask: optional `[n]` bool, True for valid rows.
      max_points: Python int ≥ 2.

    Returns:
      Scalar float32 ≥ 0, the median of the P = m(m−1)/2 pairwise distances of
      the m used rows (mean of the two middle values when P is even); 0 when
      m < 2.
    """
    rows, row_mask = _rows_and_mask(rows, row_mask)
    num_rows = rows.shape[0] if rows.shape[0] is not None else max_points
    take = min(num_rows, max_points)
    # A stable sort on "is invalid" moves valid rows first, keeping their order.
    order = tf.argsort(tf.cast(tf.logical_not(row_mask), tf.int32), stable=True)[:take]
    sample = tf.gather(rows, order)
    sample_valid = tf.gather(row_mask, order)
    sample = sample - tf.reduce_mean(sample, axis=0)
    pair_distances = tf.sqrt(distances.squared_distances(sample, sample))
    ids = tf.range(take)
    pair_valid = (ids[:, None] < ids[None, :]) & sample_valid[:, None] & sample_valid[None, :]
    sorted_distances = tf.sort(tf.reshape(tf.where(pair_valid, pair_distances, math.inf), [-1]))
    num_valid = tf.reduce_sum(tf.cast(sample_valid, tf.int32))
    num_pairs = num_valid * (num_valid - 1) // 2
    lower = tf.gather(sorted_distances, tf.maximum((num_pairs - 1) // 2, 0))
    upper = tf.gather(sorted_distances, tf.maximum(num_pairs // 2, 0))
    return tf.where(num_pairs > 0, 0.5 * (lower + upper), 0.0)


def kde_bandwidth(rows, rule, row_mask=None, fixed_bandwidth=None, max_points=1000):
    """Bandwidth of the Gaussian KDE over `rows` by the named rule.

    Args:
      rows: `[n, d]` float32 bank the KDE is built on.
      rule: Python str, one of `BANDWIDTH_RULES`.
      row_mask: optional `[n]` bool, True for valid rows.
      fixed_bandwidth: Python float > 0, used (only) by rule "fixed".
      max_points: Python int, sample size of the median heuristic.

    Returns:
      Scalar float32 ≥ 0 (see the module docstring for the formulas).
    """
    if rule == "scott":
        return scott_bandwidth(rows, row_mask)
    if rule == "silverman":
        return silverman_bandwidth(rows, row_mask)
    if rule == "median":
        return median_heuristic_bandwidth(rows, row_mask, max_points)
    if rule == "fixed":
        if fixed_bandwidth is None or not fixed_bandwidth > 0:
            raise ValueError(f"rule 'fixed' needs fixed_bandwidth > 0, got {fixed_bandwidth!r}")
        return tf.constant(fixed_bandwidth, tf.float32)
    raise ValueError(f"unknown bandwidth rule {rule!r}; expected one of {BANDWIDTH_RULES}")


def class_kde_bandwidths(
    class_banks, rule, class_bank_mask=None, fixed_bandwidth=None, max_points=1000
):
    """Per-class bandwidths, `kde_bandwidth` applied to each class bank.

    Args:
      class_banks: `[C, N, d]` float32.
      rule: Python str, one of `BANDWIDTH_RULES`.
      class_bank_mask: optional `[C, N]` bool, True for valid rows.
      fixed_bandwidth: Python float, for rule "fixed".
      max_points: Python int, sample size of the median heuristic.

    Returns:
      `[C]` float32 > 0 when the pooled banks allow: a class whose own rule
      gives no usable width (fewer than 2 valid rows, or identical rows: h = 0)
      takes the rule's bandwidth over all classes' valid rows instead, rather
      than a degenerate spike kernel.
    """
    class_banks = tf.cast(tf.convert_to_tensor(class_banks), tf.float32)
    num_classes, bank_rows, dim = class_banks.shape
    if class_bank_mask is None:
        class_bank_mask = tf.ones(tf.shape(class_banks)[:2], tf.bool)
    class_bank_mask = tf.cast(tf.convert_to_tensor(class_bank_mask), tf.bool)
    per_class = tf.stack(
        [
            kde_bandwidth(class_banks[c], rule, class_bank_mask[c], fixed_bandwidth, max_points)
            for c in range(num_classes)
        ]
    )
    if rule == "fixed":
        return per_class
    pooled = kde_bandwidth(
        tf.reshape(class_banks, [num_classes * bank_rows, dim]), rule,
        tf.reshape(class_bank_mask, [-1]), fixed_bandwidth, max_points)
    counts = tf.reduce_sum(tf.cast(class_bank_mask, tf.float32), axis=1)
    usable = tf.logical_and(counts >= 2.0, per_class > 0.0)
    return tf.where(usable, per_class, pooled)
