"""The Image2Audio losses as pure functions of tensors (DESIGN.md "Losses").

Every loss is a *sum over the local examples divided by a global denominator*,
so under a distribution strategy (gradients summed over replicas) the update
equals the single-device update on the global batch. The denominators default
to the local count (or local weight sum), which is the right value on one
device; the train step passes global values (`tf.nn.compute_average_loss`
semantics for plain means, an all-reduced weight sum for weighted means).
"""

from __future__ import annotations

import tensorflow as tf


def _denominator(values: tf.Tensor, count) -> tf.Tensor:
    if count is None:
        return tf.cast(tf.size(values), tf.float32)
    return tf.cast(count, tf.float32)


def _mean(values: tf.Tensor, count=None) -> tf.Tensor:
    """Σ values / count, with count = the global number of examples."""
    values = tf.cast(values, tf.float32)
    return tf.reduce_sum(values) / tf.maximum(_denominator(values, count), 1.0)


def hinge_discriminator_loss(real_logits, fake_logits, num_real=None, num_fake=None):
    """`L_D = mean_real max(0, 1 − D(x)) + mean_fake max(0, 1 + D(s̃))`.

    real_logits: `[Br]` float32; fake_logits: `[Bf]` float32; num_real,
    num_fake: global example counts (default: the local sizes).
    """
    return (_mean(tf.nn.relu(1.0 - real_logits), num_real)
            + _mean(tf.nn.relu(1.0 + fake_logits), num_fake))


def hinge_generator_loss(fake_logits, num_fake=None):
    """`L_G^adv = −mean_fake D(s̃)` (the hinge GAN's generator loss)."""
    return -_mean(fake_logits, num_fake)


def non_saturating_discriminator_loss(real_logits, fake_logits, num_real=None,
                                      num_fake=None):
    """`L_D = mean_real softplus(−D(x)) + mean_fake softplus(D(s̃))`, i.e. the
    cross entropy of sigmoid(D) with real = 1, translated = 0."""
    return (_mean(tf.nn.softplus(-real_logits), num_real)
            + _mean(tf.nn.softplus(fake_logits), num_fake))


def non_saturating_generator_loss(fake_logits, num_fake=None):
    """`L_G^adv = mean_fake softplus(−D(s̃))` = −log sigmoid(D(s̃))."""
    return _mean(tf.nn.softplus(-fake_logits), num_fake)


DISCRIMINATOR_LOSSES = {"hinge": hinge_discriminator_loss,
                        "non_saturating": non_saturating_discriminator_loss}
GENERATOR_LOSSES = {"hinge": hinge_generator_loss,
                    "non_saturating": non_saturating_generator_loss}


def r1_penalty(real_input_gradients, gamma, num_real=None):
    """`γ/2 · mean_real ||∇_x D(x)||²` (Mescheder et al. 2018).

    real_input_gradients: `[Br, ...]` float32, ∂ΣD(x)/∂x of the real inputs.
    """
    squared = tf.reduce_sum(
        tf.reshape(tf.square(real_input_gradients),
                   [tf.shape(real_input_gradients)[0], -1]), axis=1)
    return 0.5 * tf.cast(gamma, tf.float32) * _mean(squared, num_real)


def _per_example_cross_entropy(labels, logits, label_smoothing=0.0):
    """`−(1 − ε) log p[y] − ε mean_c log p[c]` per row, p = softmax(logits):
    the cross entropy with the target (1 − ε) one_hot(y) + ε / C."""
    logits = tf.cast(logits, tf.float32)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits)
    if not label_smoothing:
        return per_example
    uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=1)
    return (1.0 - label_smoothing) * per_example + label_smoothing * uniform


def cross_entropy(labels, logits, num_examples=None, label_smoothing=0.0):
    """`mean_i −log softmax(logits_i)[y_i]` (with `label_smoothing` ε > 0,
    against the target (1 − ε) one_hot(y) + ε / C).

    labels: `[B]` int class ids in [0, C); logits: `[B, C]` float32;
    num_examples: global batch size (default B).
    """
    return _mean(_per_example_cross_entropy(labels, logits, label_smoothing),
                 num_examples)


def mixup(inputs, labels, alpha, seed):
    """Mixup (Zhang et al. 2018) within a batch: `x̃_i = m_i x_i + (1 − m_i)
    x_π(i)` for a seeded permutation π and `m_i = max(λ_i, 1 − λ_i)`,
    λ_i ~ Beta(α, α), so that y_i stays the dominant label of x̃_i.

    inputs: `[B, ...]` float32; labels: `[B]` int; alpha > 0; seed: `[2]`
    int (stateless). Returns (mixed inputs, partner labels y_π(i), m `[B]`).
    """
    inputs = tf.cast(inputs, tf.float32)
    size = tf.shape(inputs)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    order = tf.argsort(tf.random.stateless_uniform([size], seeds[0]))
    gammas = tf.random.stateless_gamma([2, size], seeds[1], alpha=float(alpha))
    mix = gammas[0] / tf.maximum(gammas[0] + gammas[1], 1e-12)
    mix = tf.maximum(mix, 1.0 - mix)
    shape = tf.concat([[size], tf.ones([tf.rank(inputs) - 1], tf.int32)], axis=0)
    mixed = (tf.reshape(mix, shape) * inputs
             + tf.reshape(1.0 - mix, shape) * tf.gather(inputs, order))
    return mixed, tf.gather(labels, order), mix


def mixed_cross_entropy(labels, partner_labels, mix, logits, num_examples=None,
                        label_smoothing=0.0):
    """Mixup's loss `mean_i m_i CE(y_i) + (1 − m_i) CE(y_π(i))` (the cross
    entropy against the mixed target), with `label_smoothing` as
    `cross_entropy`'s.

    labels, partner_labels: `[B]` int; mix: `[B]` float32 in [0.5, 1];
    logits: `[B, C]`; num_examples: global B (default local).
    """
    mix = tf.cast(mix, tf.float32)
    per_example = (mix * _per_example_cross_entropy(labels, logits, label_smoothing)
                   + (1.0 - mix) * _per_example_cross_entropy(
                       partner_labels, logits, label_smoothing))
    return _mean(per_example, num_examples)


def weighted_cross_entropy(labels, logits, weights, total_weight=None):
    """`Σ_i w_i CE_i / W`, W = Σ_i w_i over the global batch (default local).

    The translated term (w = density weights) and the pseudo-labeled term (w =
    confidences) of C's loss. Examples with w = 0 may carry any label, even −1:
    their CE is never evaluated into the sum. W = 0 gives 0, not NaN.

    labels: `[B]` int; logits: `[B, C]` float32; weights: `[B]` float32 >= 0.
    """
    weights = tf.cast(weights, tf.float32)
    active = weights > 0
    safe_labels = tf.where(active, tf.cast(labels, tf.int32), 0)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_labels, logits=tf.cast(logits, tf.float32))
    numerator = tf.reduce_sum(tf.where(active, weights * per_example, 0.0))
    if total_weight is None:
        total_weight = tf.reduce_sum(weights)
    total_weight = tf.cast(total_weight, tf.float32)
    return tf.math.divide_no_nan(numerator, total_weight)


# The names DESIGN.md uses for the two weighted terms of C's loss.
density_weighted_cross_entropy = weighted_cross_entropy
confidence_weighted_cross_entropy = weighted_cross_entropy


def rampup_weight(epochs_since_warmup, rampup_epochs):
    """Weight factor of the auxiliary terms, `exp(−5 (1 − t)²)` with
    `t = clip((e + 1) / R, 0, 1)` for the e-th epoch after warm-up (e = 0 is
    the first full-objective epoch), 0 before warm-up ends (e < 0), and 1 when
    R = 0 (Laine & Aila 2017; Tarvainen & Valpola 2017).

    With R = 4 the first four full-objective epochs weigh 0.06, 0.29, 0.73, 1.
    """
    epochs = tf.cast(epochs_since_warmup, tf.float32)
    if rampup_epochs <= 0:
        return tf.cast(epochs >= 0.0, tf.float32)
    progress = tf.clip_by_value((epochs + 1.0) / float(rampup_epochs), 0.0, 1.0)
    return tf.where(epochs >= 0.0, tf.exp(-5.0 * tf.square(1.0 - progress)), 0.0)


def aligned_probabilities(probabilities, running_mean, target=None):
    """Distribution alignment (Berthelot et al. 2020, ReMixMatch):
    `p̃ = normalise(p · target / running_mean)` row by row.

    probabilities: `[B, C]`; running_mean: `[C]` > 0, the running mean of p over
    unlabeled batches; target: `[C]` class distribution to align to (default
    uniform).
    """
    probabilities = tf.cast(probabilities, tf.float32)
    running_mean = tf.cast(running_mean, tf.float32)
    if target is None:
        target = tf.fill(tf.shape(running_mean), 1.0 / tf.cast(tf.size(running_mean),
                                                                tf.float32))
    scaled = probabilities * target[tf.newaxis, :] / tf.maximum(running_mean, 1e-6)
    return scaled / tf.reduce_sum(scaled, axis=1, keepdims=True)


def consistency_cross_entropy(weak_logits, strong_logits, threshold, num_examples=None,
                              running_mean=None):
    """FixMatch's unlabeled term: `Σ_i 1[max p_i ≥ τ] CE(strong_i, argmax p_i) / B`
    with p = softmax(weak logits) held constant (no gradient), aligned by
    `aligned_probabilities` when `running_mean` is given.

    weak_logits, strong_logits: `[B, C]` float32; threshold: τ in [0, 1];
    num_examples: global B (default local). Returns (loss, mask `[B]` float32,
    targets `[B]` int32).
    """
    probabilities = tf.nn.softmax(tf.stop_gradient(tf.cast(weak_logits, tf.float32)))
    if running_mean is not None:
        probabilities = aligned_probabilities(probabilities, running_mean)
    targets = tf.argmax(probabilities, axis=1, output_type=tf.int32)
    mask = tf.cast(tf.reduce_max(probabilities, axis=1) >= threshold, tf.float32)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(strong_logits, tf.float32))
    return _mean(mask * per_example, num_examples), mask, targets


def mode_seeking_loss(outputs, codes, labels, eps=1e-5):
    """Mode seeking (Mao et al. 2019, MSGAN) within classes: `1 / (mean over
    pairs of d(G_i, G_j) / d(c_i, c_j) + eps)`, d = mean absolute difference,
    over the pairs (i, j) of examples of one class that are neighbours when the
    batch is sorted by label. Minimising it makes G's output move with its
    input code (face code and noise) instead of collapsing to one output per
    class. 0 when no class has two examples in the batch.

    outputs: `[B, ...]` G's outputs; codes: `[B, k]` the inputs they came from
    (held constant); labels: `[B]` int.
    """
    order = tf.argsort(tf.cast(labels, tf.int32), stable=True)
    outputs = tf.gather(tf.cast(outputs, tf.float32), order)
    codes = tf.stop_gradient(tf.gather(tf.cast(codes, tf.float32), order))
    labels = tf.gather(labels, order)
    size = tf.shape(outputs)[0]
    flat = tf.reshape(outputs, [size, -1])
    output_distance = tf.reduce_mean(tf.abs(flat[1:] - flat[:-1]), axis=1)
    code_distance = tf.reduce_mean(tf.abs(codes[1:] - codes[:-1]), axis=1)
    same = tf.cast(tf.equal(labels[1:], labels[:-1]), tf.float32)
    ratio = output_distance / tf.maximum(code_distance, eps)
    pairs = tf.reduce_sum(same)
    mean_ratio = tf.math.divide_no_nan(tf.reduce_sum(same * ratio), pairs)
    return tf.where(pairs > 0, 1.0 / (mean_ratio + eps), 0.0)

