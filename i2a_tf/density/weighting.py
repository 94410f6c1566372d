"""Reliability, density rank and annealed weights of translated samples.

A translated spectrogram s̃_i of class y_i with classifier embedding v_i = φ(s̃_i)
is weighted in the classifier loss by

    w_i = 1[r_i ≥ ρ] · sigmoid((q_i − τ(t)) / T)

where r_i is the KDE class posterior of its own class (reliability), q_i the
density rank of p_{y_i}(v_i) among the real clips of class y_i, τ(t) the
annealed threshold (`density.annealing`) and T a temperature. Each piece is a
small pure function; `translation_density_weights` chains them.
"""

import typing

import tensorflow as tf

from i2a_tf.density import kde


def class_log_posterior(class_log_densities, class_priors=None):
    """KDE class posterior in log space, `log p_c(v) π_c − log Σ_c' p_c'(v) π_c'`.

    Args:
      class_log_densities: `[M, C]` float32, `log p_c(v_i)` (may be −inf).
      class_priors: optional `[C]` float32 > 0, class priors π_c (normalised
        here; default uniform).

    Returns:
      `[M, C]` float32 ≤ 0; a row whose densities are all −inf is −inf.
    """
    class_log_densities = tf.cast(tf.convert_to_tensor(class_log_densities), tf.float32)
    if class_priors is None:
        log_priors = tf.zeros_like(class_log_densities[0])
    else:
        class_priors = tf.cast(tf.convert_to_tensor(class_priors), tf.float32)
        log_priors = tf.math.log(class_priors / tf.reduce_sum(class_priors))
    joint = class_log_densities + log_priors[None, :]
    evidence = tf.reduce_logsumexp(joint, axis=1, keepdims=True)
    # −inf − (−inf) would be NaN; a sample with no density anywhere has no
    # reliable class.
    return tf.where(tf.math.is_finite(evidence), joint - evidence, -float("inf"))


def reliability(class_log_densities, labels, class_priors=None):
    """Posterior of the intended class, `r_i = p_{y_i}(v_i) π_{y_i} / Σ_c p_c(v_i) π_c`.

    Args:
      class_log_densities: `[M, C]` float32, `log p_c(v_i)`.
      labels: `[M]` int, intended class y_i in [0, C).
      class_priors: optional `[C]` float32 > 0 (default uniform).

    Returns:
      `[M]` float32 in [0, 1].
    """
    log_posterior = class_log_posterior(class_log_densities, class_priors)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    return tf.exp(tf.gather(log_posterior, labels, batch_dims=1))


def density_rank(log_densities, labels, bank_log_densities, class_bank_mask=None):
    """Quantile of each sample's own-class density among its class's real clips.

    `q_i = |{j valid in bank y_i : bank_log_densities[y_i, j] ≤ log_densities[i]}|
    / N_valid(y_i)`, so q = 1 when the sample is at least as dense as the
    densest real clip of its class and q = 0 when it is less dense than all.
    The bank densities are leave-one-out KDE values of each real clip within
    its own class bank (`kde.class_leave_one_out_kde_log_prob`), i.e. the
    density a real clip gets from the *other* real clips.

    Args:
      log_densities: `[M]` float32, `log p_{y_i}(v_i)` (KDE over class bank y_i).
      labels: `[M]` int in [0, C), class y_i.
      bank_log_densities: `[C, N]` float32, density of each bank row.
      class_bank_mask: optional `[C, N]` bool, True for valid bank rows.

    Returns:
      `[M]` float32 in [0, 1]; 0 for a class with no bank row of finite density
      (an empty bank, or a single row, whose leave-one-out density is −inf).
    """
    log_densities = tf.cast(tf.convert_to_tensor(log_densities), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    bank_log_densities = tf.cast(tf.convert_to_tensor(bank_log_densities), tf.float32)
    if class_bank_mask is None:
        class_bank_mask = tf.ones(tf.shape(bank_log_densities), tf.bool)
    class_bank_mask = tf.cast(tf.convert_to_tensor(class_bank_mask), tf.bool)
    own_bank = tf.gather(bank_log_densities, labels)
    # A bank row without a finite density (e.g. the only row of its class has
    # no other row to be dense against) is no reference: q = 0, not 1.
    own_mask = tf.logical_and(tf.gather(class_bank_mask, labels), tf.math.is_finite(own_bank))
    not_denser = tf.logical_and(own_mask, own_bank <= log_densities[:, None])
    below = tf.reduce_sum(tf.cast(not_denser, tf.float32), axis=1)
    valid = tf.reduce_sum(tf.cast(own_mask, tf.float32), axis=1)
    return below / tf.maximum(valid, 1.0)


def translation_weights(reliabilities, density_ranks, threshold, min_reliability, temperature):
    """`w_i = 1[r_i ≥ ρ] · sigmoid((q_i − τ) / T)`.

    Args:
      reliabilities: `[M]` float32 in [0, 1], r_i.
      density_ranks: `[M]` float32 in [0, 1], q_i.
      threshold: scalar float32, τ(t) (e.g. from `annealing.annealing_threshold`).
      min_reliability: scalar float, ρ in [0, 1].
      temperature: scalar float > 0, T.

    Returns:
      `[M]` float32 in [0, 1).
    """
    reliabilities = tf.cast(tf.convert_to_tensor(reliabilities), tf.float32)
    density_ranks = tf.cast(tf.convert_to_tensor(density_ranks), tf.float32)
    threshold = tf.cast(threshold, tf.float32)
    soft_gate = tf.sigmoid((density_ranks - threshold) / tf.cast(temperature, tf.float32))
    return tf.where(reliabilities >= tf.cast(min_reliability, tf.float32), soft_gate, 0.0)


def dense_log_density(bank_log_densities, threshold, class_bank_mask=None):
    """Per class, the least own-class log-density whose density rank reaches τ.

    `density_rank` gives q = k / N for a log-density at least the k-th smallest
    of the N valid finite bank densities of its class, so q ≥ τ exactly when the
    log-density is ≥ the ⌈τN⌉-th smallest of them. That value is returned per
    class: the floor of the region the annealed gate calls dense.

    Args:
      bank_log_densities: `[C, N]` float32, density of each bank row.
      threshold: scalar float32 in [0, 1], τ.
      class_bank_mask: optional `[C, N]` bool, True for valid bank rows.

    Returns:
      `[C]` float32; −inf when τ·N < 1 (every sample is dense enough) or the
      class has no valid finite row (no sample can be: nothing to reach).
    """
    bank_log_densities = tf.cast(tf.convert_to_tensor(bank_log_densities), tf.float32)
    if class_bank_mask is None:
        class_bank_mask = tf.ones(tf.shape(bank_log_densities), tf.bool)
    class_bank_mask = tf.cast(tf.convert_to_tensor(class_bank_mask), tf.bool)
    valid = tf.logical_and(class_bank_mask, tf.math.is_finite(bank_log_densities))
    ascending = tf.sort(tf.where(valid, bank_log_densities, float("inf")), axis=1)
    counts = tf.reduce_sum(tf.cast(valid, tf.float32), axis=1)
    # ⌈τN⌉ with a guard against τN landing a rounding error above an integer.
    needed = tf.math.ceil(tf.cast(threshold, tf.float32) * counts - 1e-4)
    index = tf.cast(tf.clip_by_value(needed - 1.0, 0.0,
                                     tf.cast(tf.shape(ascending)[1] - 1, tf.float32)),
                    tf.int32)
    floor = tf.gather(ascending, index[:, None], batch_dims=1)[:, 0]
    return tf.where((needed >= 1.0) & (counts >= 1.0), floor, -float("inf"))


def density_shortfall(own_log_densities, labels, bank_log_densities, bandwidths,
                      threshold, class_bank_mask=None):
    """How far each translated sample is below its class's dense region.

    `s_i = h_{y_i}² · max(0, ℓ_{y_i}(τ) − log p_{y_i}(v_i))`, with ℓ_y(τ) the
    floor of class y's dense region (`dense_log_density`) and h_y its kernel
    width. The h² makes the gradient a displacement in φ's own units:
    −h² ∇_v log p_y(v) = v − Σ_j s_j b_j (s = the kernel's softmax over the
    bank), so minimising s pulls v towards the nearest real clips of its class,
    and far from them s ≈ ½ · (squared distance to the nearest). A sample
    already dense enough to pass the gate contributes 0 and no gradient; so
    does every sample of a class with nothing to reach (ℓ = −inf).

    Args:
      own_log_densities: `[M]` float32, `log p_{y_i}(v_i)`, differentiable.
      labels: `[M]` int in [0, C).
      bank_log_densities: `[C, N]` float32.
      bandwidths: scalar or `[C]` float32 > 0.
      threshold: scalar float32, τ.
      class_bank_mask: optional `[C, N]` bool.

    Returns:
      `[M]` float32 ≥ 0.
    """
    own_log_densities = tf.cast(tf.convert_to_tensor(own_log_densities), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    floors = tf.gather(dense_log_density(bank_log_densities, threshold, class_bank_mask),
                       labels)
    num_classes = tf.shape(tf.convert_to_tensor(bank_log_densities))[0]
    widths = tf.gather(tf.broadcast_to(tf.cast(bandwidths, tf.float32), [num_classes]),
                       labels)
    reachable = tf.math.is_finite(floors) & tf.math.is_finite(own_log_densities)
    # Zeros, not −inf, enter the subtraction where unreachable (no NaN gradient).
    gap = tf.where(reachable, floors - tf.where(reachable, own_log_densities, 0.0), 0.0)
    return tf.square(tf.stop_gradient(widths)) * tf.nn.relu(gap)


class TranslationDensityWeights(typing.NamedTuple):
    """Weights of translated samples with the quantities they come from.

    weights: `[M]` float32 in [0, 1), w_i.
    reliabilities: `[M]` float32 in [0, 1], r_i.
    density_ranks: `[M]` float32 in [0, 1], q_i.
    class_log_densities: `[M, C]` float32, log p_c(v_i).
    """

    weights: tf.Tensor
    reliabilities: tf.Tensor
    density_ranks: tf.Tensor
    class_log_densities: tf.Tensor


def translation_density_weights(
    translated_embeddings,
    labels,
    class_banks,
    class_bank_mask,
    bandwidths,
    bank_log_densities,
    threshold,
    min_reliability,
    temperature,
    class_priors=None,
):
    """KDE → reliability, density rank → annealed weight, in one call.

    Args:
      translated_embeddings: `[M, d]` float32, v_i = φ(s̃_i).
      labels: `[M]` int in [0, C), class y_i each translation was made for.
      class_banks: `[C, N, d]` float32, embeddings of labeled real clips.
      class_bank_mask: `[C, N]` bool or None, True for filled bank rows.
      bandwidths: scalar or `[C]` float32 > 0, kernel std per class.
      bank_log_densities: `[C, N]` float32, leave-one-out density of each bank
        row within its class (`kde.class_leave_one_out_kde_log_prob`, computed
        when the banks are refreshed).
      threshold: scalar float32, τ(t).
      min_reliability: scalar float, ρ.
      temperature: scalar float > 0, T.
      class_priors: optional `[C]` float32 > 0, π_c (default uniform).

    Returns:
      `TranslationDensityWeights`.
    """
    class_log_densities = kde.class_kde_log_prob(
        translated_embeddings, class_banks, bandwidths, class_bank_mask
    )
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    reliabilities = reliability(class_log_densities, labels, class_priors)
    own_log_densities = tf.gather(class_log_densities, labels, batch_dims=1)
    density_ranks = density_rank(own_log_densities, labels, bank_log_densities, class_bank_mask)
    weights = translation_weights(
        reliabilities, density_ranks, threshold, min_reliability, temperature
    )
    return TranslationDensityWeights(weights, reliabilities, density_ranks, class_log_densities)
