"""The losses on tiny constants with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from i2a_tf.training import losses


def test_hinge_discriminator_loss():
    real, fake = tf.constant([0.5, 2.0]), tf.constant([-2.0, 0.0])
    # real: max(0, 1-0.5)=0.5, max(0, 1-2)=0 -> 0.25; fake: 0, 1 -> 0.5.
    assert float(losses.hinge_discriminator_loss(real, fake)) == pytest.approx(0.75)
    # Global denominators (two replicas of this batch): the share is halved.
    assert float(losses.hinge_discriminator_loss(real, fake, 4, 4)) == pytest.approx(0.375)


def test_hinge_generator_loss():
    assert float(losses.hinge_generator_loss(tf.constant([1.0, -3.0]))) == pytest.approx(1.0)


def test_non_saturating_losses():
    real, fake = tf.constant([0.0]), tf.constant([math.log(3.0)])
    # softplus(0) = log 2; softplus(log 3) = log 4.
    assert float(losses.non_saturating_discriminator_loss(real, fake)) == pytest.approx(
        math.log(2.0) + math.log(4.0))
    # softplus(-log 3) = log(4/3).
    assert float(losses.non_saturating_generator_loss(fake)) == pytest.approx(
        math.log(4.0 / 3.0))


def test_r1_penalty():
    gradients = tf.constant([[[1.0, 2.0]], [[0.0, 0.0]]])  # squared norms 5 and 0
    assert float(losses.r1_penalty(gradients, 2.0)) == pytest.approx(0.5 * 2.0 * 2.5)


def test_cross_entropy():
    logits = tf.constant([[0.0, 0.0], [math.log(3.0), 0.0]])
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert float(losses.cross_entropy([0, 0], logits)) == pytest.approx(expected)
    assert float(losses.cross_entropy([0, 0], logits, 4)) == pytest.approx(expected / 2)


def test_weighted_cross_entropy():
    logits = tf.constant([[math.log(3.0), 0.0], [0.0, 0.0], [5.0, -5.0]])
    labels = tf.constant([0, 1, -1])  # the third has weight 0: its label is unused
    weights = tf.constant([1.0, 3.0, 0.0])
    expected = (math.log(4.0 / 3.0) + 3 * math.log(2.0)) / 4.0
    value = losses.weighted_cross_entropy(labels, logits, weights)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # With the global weight sum of two replicas (here 8): half the share.
    assert float(losses.weighted_cross_entropy(labels, logits, weights, 8.0)) == \
        pytest.approx(expected / 2, rel=1e-6)


def test_weighted_cross_entropy_zero_weights_is_zero_not_nan():
    value = losses.weighted_cross_entropy([0, 1], tf.zeros([2, 3]), tf.zeros([2]))
    assert float(value) == 0.0


def test_weighted_cross_entropy_gradient_ignores_zero_weight_rows():
    logits = tf.Variable([[1.0, 2.0], [3.0, 4.0]])
    with tf.GradientTape() as tape:
        loss = losses.density_weighted_cross_entropy([0, -1], logits, [1.0, 0.0])
    gradient = tape.gradient(loss, logits).numpy()
    assert np.all(gradient[1] == 0.0) and np.any(gradient[0] != 0.0)
