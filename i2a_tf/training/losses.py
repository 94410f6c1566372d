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


def cross_entropy(labels, logits, num_examples=None):
    """`mean_i −log softmax(logits_i)[y_i]`.

    labels: `[B]` int class ids in [0, C); logits: `[B, C]` float32;
    num_examples: global batch size (default B).
    """
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))
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
