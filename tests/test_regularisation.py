"""C's supervised regularisers: label smoothing, mixup, the cosine schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from training_fixtures import set_tiny_state, tiny_batch, tiny_config, tiny_model

from i2a_tf.training import losses
from i2a_tf.training.trainer import classifier_learning_rate


def test_label_smoothing_by_hand():
    # p = softmax([log 3, 0]) = [0.75, 0.25], y = 0, eps = 0.2:
    # 0.8 * -log 0.75 + 0.2 * -(log 0.75 + log 0.25) / 2.
    logits = tf.constant([[math.log(3.0), 0.0]])
    expected = 0.8 * -math.log(0.75) + 0.2 * -(math.log(0.75) + math.log(0.25)) / 2
    assert float(losses.cross_entropy([0], logits, label_smoothing=0.2)) == \
        pytest.approx(expected, rel=1e-6)
    assert float(losses.cross_entropy([0], logits)) == pytest.approx(-math.log(0.75))


def test_mixed_cross_entropy_by_hand():
    logits = tf.constant([[math.log(3.0), 0.0], [0.0, 0.0]])
    # Row 0: m = 0.75 of y = 0 and 0.25 of partner y = 1; row 1: m = 1 (uniform).
    value = losses.mixed_cross_entropy([0, 1], [1, 0], [0.75, 1.0], logits)
    expected = (0.75 * -math.log(0.75) + 0.25 * -math.log(0.25) + math.log(2)) / 2
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # m = 1 everywhere is the plain cross entropy.
    assert float(losses.mixed_cross_entropy([0, 1], [1, 0], [1.0, 1.0], logits)) == \
        pytest.approx(float(losses.cross_entropy([0, 1], logits)), rel=1e-6)


def test_mixup_mixes_with_a_permuted_partner():
    # Example i is the constant i, so the mix reveals the partner's index.
    inputs = tf.reshape(tf.range(6, dtype=tf.float32), [6, 1, 1]) * tf.ones([6, 2, 3])
    labels = tf.constant([10, 11, 12, 13, 14, 15])
    mixed, partner_labels, mix = losses.mixup(inputs, labels, 0.4, tf.constant([3, 4]))
    mix, partner = mix.numpy(), partner_labels.numpy() - 10
    assert np.all((mix >= 0.5) & (mix <= 1.0))
    assert sorted(partner) == list(range(6))  # a permutation
    expected = mix * np.arange(6) + (1 - mix) * partner
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(mixed.numpy(), mixed.numpy()[:, :1, :1] * np.ones([6, 2, 3]))
    # Seeded: the same seed mixes the same way, another seed differently.
    again = losses.mixup(inputs, labels, 0.4, tf.constant([3, 4]))
    np.testing.assert_array_equal(again[2].numpy(), mix)
    other = losses.mixup(inputs, labels, 0.4, tf.constant([3, 5]))
    assert not np.array_equal(other[2].numpy(), mix)


def test_cosine_schedule_runs_from_the_rate_to_zero():
    config = tiny_config(lr_schedule="cosine", classifier_lr=0.01, epochs=4,
                         steps_per_epoch=5)
    schedule = classifier_learning_rate(config)
    assert [float(schedule(s)) for s in (0, 10, 20)] == pytest.approx([0.01, 0.005, 0.0],
                                                                       abs=1e-8)
    assert classifier_learning_rate(tiny_config()) == tiny_config().train.classifier_lr


def test_train_step_with_mixup_and_smoothing_is_seeded():
    """Two models built alike take the same step (mixup is a function of the
    seed and step), and it differs from the step without mixup."""
    def step(**overrides):
        keras_seed = 7
        tf.keras.utils.set_random_seed(keras_seed)
        config = tiny_config(use_translation=False, use_pseudo_labels=False,
                             **overrides)
        model = tiny_model(config)
        batch = {k: v for k, v in tiny_batch().items() if not k.startswith("face")}
        logs = model.train_step(batch)
        return float(logs["c_labeled_loss"]), [v.numpy() for v in
                                               model.classifier.trainable_variables]

    mixed_loss, mixed_weights = step(mixup_alpha=0.4, label_smoothing=0.1)
    again_loss, again_weights = step(mixup_alpha=0.4, label_smoothing=0.1)
    plain_loss, _ = step()
    assert mixed_loss == again_loss
    for a, b in zip(mixed_weights, again_weights):
        np.testing.assert_array_equal(a, b)
    assert mixed_loss != plain_loss


def test_mode_seeking_loss_by_hand():
    # Sorted by label: pairs (0, 1) of class 0 and (2, 3) of class 1; (1, 2) crosses.
    outputs = tf.constant([[0.0, 0.0], [2.0, 2.0], [5.0, 5.0], [5.0, 6.0]])
    codes = tf.constant([[0.0], [1.0], [9.0], [11.0]])
    labels = tf.constant([0, 0, 1, 1])
    # Ratios: |2 - 0| / 1 = 2 and mean(0, 1) / 2 = 0.25; mean 1.125.
    value = losses.mode_seeking_loss(outputs, codes, labels, eps=0.0)
    assert float(value) == pytest.approx(1 / 1.125, rel=1e-6)
    # The batch order does not matter (it is sorted by label first).
    shuffled = [2, 0, 3, 1]
    again = losses.mode_seeking_loss(tf.gather(outputs, shuffled), tf.gather(codes, shuffled),
                                     tf.gather(labels, shuffled), eps=0.0)
    assert float(again) == pytest.approx(float(value), rel=1e-6)
    # No class with two examples: 0.
    assert float(losses.mode_seeking_loss(outputs[:2], codes[:2], [0, 1])) == 0.0
    # Collapsed outputs (identical within a class) are penalised hardest.
    collapsed = losses.mode_seeking_loss(tf.constant([[1.0], [1.0], [3.0], [3.0]]),
                                         codes, labels)
    assert float(collapsed) > 1e4


def test_diversity_term_reaches_the_generator():
    tf.keras.utils.set_random_seed(3)
    config = tiny_config(lambda_diversity=1.0)
    model = tiny_model(config)
    logs = model.train_step(tiny_batch(global_batch=6))
    assert float(logs["g_diversity_loss"]) > 0
    assert "g_diversity_loss" not in tiny_model(tiny_config()).trackers


def _one_step_updates(lambda_density):
    """(C's, G's) weights after one step of a tiny model with the density gate
    at τ = 1 (every translation falls short of its class's densest clip)."""
    import keras
    keras.utils.set_random_seed(4)
    model = tiny_model(tiny_config(lambda_density=lambda_density, use_annealing=False,
                                   tau_min=1.0, dropout=0.0))
    set_tiny_state(model)
    logs = model.train_step(tiny_batch(global_batch=6))
    values = lambda variables: np.concatenate([v.numpy().ravel() for v in variables])
    return (values(model.classifier.trainable_variables),
            values(model.generator_variables), logs)


def test_density_term_trains_the_generator_and_never_the_classifier():
    c_off, g_off, logs_off = _one_step_updates(0.0)
    c_on, g_on, logs = _one_step_updates(1.0)
    assert "g_density_loss" not in logs_off
    assert float(logs["g_density_loss"]) > 0
    # G's loss gains the term; C's loss and update are untouched by it.
    assert float(logs["loss"]) == pytest.approx(
        float(logs_off["loss"]) + float(logs["g_density_loss"]), rel=1e-5)
    np.testing.assert_allclose(c_on, c_off, rtol=0, atol=1e-7)
    assert np.abs(g_on - g_off).max() > 1e-6
