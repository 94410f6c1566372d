"""The auxiliary terms of C's loss: ramp, normalisers, judge, consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from training_fixtures import (MELS, FRAMES, NUM_UNLABELED, set_tiny_state, tiny_batch,
                               tiny_config, tiny_model)

from i2a_tf.data.pipeline import strong_augment
from i2a_tf.training import callbacks as callbacks_lib
from i2a_tf.training import losses


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def test_rampup_weight_by_hand():
    ramp = [float(losses.rampup_weight(e, 4)) for e in (-2, -1, 0, 1, 2, 3, 4, 10)]
    expected = [0.0, 0.0, math.exp(-5 * 0.75 ** 2), math.exp(-5 * 0.5 ** 2),
                math.exp(-5 * 0.25 ** 2), 1.0, 1.0, 1.0]
    np.testing.assert_allclose(ramp, expected, rtol=1e-6)
    assert ramp[2] == pytest.approx(0.0601, abs=1e-4)
    # No ramp: 0 in warm-up, 1 from the first full-objective epoch.
    assert [float(losses.rampup_weight(e, 0)) for e in (-1, 0, 5)] == [0.0, 1.0, 1.0]


def test_weighted_cross_entropy_normalisers_by_hand():
    # Two samples, CE log 2 each (uniform logits over 2 classes); weights 0.5, 0.
    logits = tf.zeros([2, 2])
    labels = tf.constant([0, -1])
    weights = tf.constant([0.5, 0.0])
    batch = losses.weighted_cross_entropy(labels, logits, weights, total_weight=2.0)
    weight_sum = losses.weighted_cross_entropy(labels, logits, weights)
    assert float(batch) == pytest.approx(0.5 * math.log(2) / 2)
    assert float(weight_sum) == pytest.approx(math.log(2))


def test_consistency_cross_entropy_by_hand():
    weak = tf.constant([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    strong = tf.zeros([3, 3])
    loss, mask, targets = losses.consistency_cross_entropy(weak, strong, 0.95)
    # Rows 0 and 2 are confident (p = 0.9999, 0.9998); row 1 is not (1/3).
    np.testing.assert_array_equal(mask.numpy(), [1, 0, 1])
    np.testing.assert_array_equal(targets.numpy(), [0, 0, 2])
    assert float(loss) == pytest.approx(2 * math.log(3) / 3, rel=1e-6)
    # Divided by the global batch when given, not by the confident count.
    loss, _, _ = losses.consistency_cross_entropy(weak, strong, 0.95, 6)
    assert float(loss) == pytest.approx(2 * math.log(3) / 6, rel=1e-6)


def test_unlabeled_normalisers_in_the_step():
    """batch: Σ c CE / B_u; weight_sum: Σ c CE / Σ c, same model and batch."""
    import keras
    results = {}
    for normalizer in ("weight_sum", "batch"):
        keras.utils.set_random_seed(0)
        model = tiny_model(tiny_config(unlabeled_normalizer=normalizer,
                                       use_translation=False))
        set_tiny_state(model)
        results[normalizer] = float(model.train_step(tiny_batch())["c_unlabeled_loss"])
    # tiny_batch's 4 unlabeled clips are indices 0..3, confidences linspace(.5, 1, 6).
    confidences = np.linspace(0.5, 1.0, NUM_UNLABELED)[:4]
    assert results["batch"] == pytest.approx(
        results["weight_sum"] * confidences.sum() / 4, rel=1e-4)


def _classifier_update(normalizer, lambda_t, weight):
    """C's weights after one SGD(1) step minus before, with every translated
    sample's density weight forced to `weight`."""
    import keras
    keras.utils.set_random_seed(0)
    model = tiny_model(tiny_config(translated_normalizer=normalizer, lambda_t=lambda_t,
                                   use_pseudo_labels=False, dropout=0.0))
    model.classifier_optimizer = keras.optimizers.SGD(1.0)
    model.classifier_optimizer.build(model.classifier.trainable_variables)
    set_tiny_state(model)

    def forced(embeddings, labels):
        ones = tf.ones_like(labels, tf.float32)
        return ones * weight, ones, {}

    model._translation_weights = forced
    before = _values(model.classifier.trainable_variables)
    model.train_step(tiny_batch())
    after = _values(model.classifier.trainable_variables)
    return np.concatenate([(a - b).ravel() for a, b in zip(after, before)])


@pytest.mark.parametrize("normalizer", ["batch", "weight_sum"])
def test_near_zero_weights_switch_the_translated_term_off(normalizer):
    """With every weight ~1e-6 the translated term's share of C's gradient is
    ~0 under the batch normaliser; DESIGN.md's Σ w keeps it at full weight."""
    with_term = _classifier_update(normalizer, 1.0, 1e-6)
    without = _classifier_update(normalizer, 0.0, 1e-6)
    share = np.linalg.norm(with_term - without) / np.linalg.norm(without)
    if normalizer == "batch":
        assert share < 1e-4
    else:
        assert share > 0.05


def test_judge_is_a_frozen_snapshot_of_the_classifier():
    model = tiny_model(tiny_config(use_translation_judge=True, warmup_epochs=1,
                                   epochs=3))
    assert not any(v is w for v in model.trainable_variables
                   for w in model.judge.weights)
    snapshot = callbacks_lib.JudgeSnapshot()
    snapshot.set_model(model)
    set_tiny_state(model)
    untouched = _values(model.judge.weights)
    snapshot.on_epoch_begin(0)  # still warm-up: no snapshot
    for a, b in zip(untouched, _values(model.judge.weights)):
        np.testing.assert_array_equal(a, b)
    model.train_step(tiny_batch())
    snapshot.on_epoch_begin(1)  # warm-up over: the judge takes C's saved weights
    with callbacks_lib.saved_weights(model):
        expected = _values(model.classifier.weights)
    judged = _values(model.judge.weights)
    for a, b in zip(expected, judged):
        np.testing.assert_array_equal(a, b)
    classifier_before = _values(model.classifier.trainable_variables)
    logs = {}
    for _ in range(3):
        logs = model.train_step(tiny_batch())
    snapshot.on_epoch_begin(2)  # later epochs leave it alone
    for a, b in zip(judged, _values(model.judge.weights)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in
               zip(classifier_before, _values(model.classifier.trainable_variables)))
    assert 0.0 <= float(logs["judge_accuracy"]) <= 1.0
    assert 0.0 <= float(logs["judge_admitted_fraction"]) <= 1.0


def test_judge_verdict_gates_the_translated_weights():
    """A judge that rejects everything admits nothing: the translated term is 0."""
    model = tiny_model(tiny_config(use_translation_judge=True, judge_threshold=1.0,
                                   use_density_weights=False,
                                   translated_normalizer="batch"))
    set_tiny_state(model)
    logs = {k: float(v) for k, v in model.train_step(tiny_batch()).items()}
    assert logs["judge_admitted_fraction"] == 0.0
    assert logs["mean_density_weight"] == 0.0 and logs["c_translated_loss"] == 0.0


def test_consistency_step_logs_and_trains():
    model = tiny_model(tiny_config(use_consistency=True, use_translation=False,
                                   use_pseudo_labels=False, consistency_threshold=0.0))
    set_tiny_state(model)
    batch = {k: v for k, v in tiny_batch().items() if not k.startswith("face")}
    batch["unlabeled_weak_logmel"] = batch["unlabeled_logmel"]
    batch["unlabeled_strong_logmel"] = batch["unlabeled_logmel"][::-1].copy()
    batch["unlabeled_true_label"] = np.zeros(4, np.int32)
    logs = {k: float(v) for k, v in model.train_step(batch).items()}
    # Threshold 0: every clip is a target.
    assert logs["consistency_mask_fraction"] == 1.0
    assert logs["c_consistency_loss"] > 0
    assert logs["c_loss"] == pytest.approx(
        logs["c_labeled_loss"] + logs["c_consistency_loss"], rel=1e-5)
    assert 0.0 <= logs["consistency_target_accuracy"] <= 1.0


def test_strong_augment_is_seeded_and_bounded():
    logmel = tf.random.stateless_normal([3, MELS, FRAMES], [1, 2])
    seed = tf.constant([5, 6], tf.int32)
    kwargs = dict(freq_mask_bands=1, time_mask_frames=2, num_freq_masks=1,
                  num_time_masks=1, gain=0.5)
    once = strong_augment(logmel, seed, **kwargs).numpy()
    again = strong_augment(logmel, seed, **kwargs).numpy()
    np.testing.assert_array_equal(once, again)
    assert once.shape == (3, MELS, FRAMES)
    assert not np.allclose(once, logmel.numpy())
    # No masks, no shift: only the per-clip offset in [-gain, gain] remains.
    plain = strong_augment(logmel, seed, freq_mask_bands=0, time_mask_frames=0,
                           num_freq_masks=0, num_time_masks=0, gain=0.5).numpy()
    # A time roll permutes each clip's frames, so its sorted values move by
    # one constant: the offset.
    for shifted, clip in zip(plain, logmel.numpy()):
        difference = np.sort(shifted.ravel()) - np.sort(clip.ravel())
        assert np.ptp(difference) < 1e-5 and abs(difference[0]) <= 0.5 + 1e-6


def test_distribution_alignment_by_hand():
    # C favours class 0 on average (running mean .6/.2/.2): a row that is
    # 0.5/0.3/0.2 becomes normalise(0.5/.6, .3/.2, .2/.2) = (.833, 1.5, 1) / 3.333.
    aligned = losses.aligned_probabilities(
        tf.constant([[0.5, 0.3, 0.2]]), tf.constant([0.6, 0.2, 0.2])).numpy()
    np.testing.assert_allclose(aligned, [[0.25, 0.45, 0.3]], rtol=1e-5)
    # The argmax target moves from the favoured class to class 1.
    weak = tf.math.log(tf.constant([[0.5, 0.3, 0.2]]))
    _, mask, targets = losses.consistency_cross_entropy(
        weak, tf.zeros([1, 3]), 0.4, running_mean=tf.constant([0.6, 0.2, 0.2]))
    assert int(targets[0]) == 1 and float(mask[0]) == 1.0


def test_mean_teacher_follows_the_classifier_by_its_momentum():
    model = tiny_model(tiny_config(use_consistency=True, use_translation=False,
                                   use_pseudo_labels=False, consistency_teacher="ema",
                                   teacher_momentum=0.9))
    for a, b in zip(_values(model.teacher.weights), _values(model.classifier.weights)):
        np.testing.assert_array_equal(a, b)  # starts as C
    assert not any(v is w for v in model.trainable_variables for w in model.teacher.weights)
    set_tiny_state(model)
    batch = {k: v for k, v in tiny_batch().items() if not k.startswith("face")}
    batch["unlabeled_weak_logmel"] = batch["unlabeled_logmel"]
    batch["unlabeled_strong_logmel"] = batch["unlabeled_logmel"]
    teacher_before = _values(model.teacher.weights)
    model.train_step(batch)
    for old, new, student in zip(teacher_before, _values(model.teacher.weights),
                                 _values(model.classifier.weights)):
        np.testing.assert_allclose(new, 0.9 * old + 0.1 * student, rtol=1e-5, atol=1e-6)


def _split(n, labeled, seed):
    rng = np.random.default_rng(seed)
    truth = (np.arange(n) % 3).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices({
        "logmel": rng.standard_normal([n, MELS, FRAMES]).astype(np.float32),
        "label": truth if labeled else np.full(n, -1, np.int32),
        "true_label": truth, "index": np.arange(n, dtype=np.int32)}).batch(4)


@pytest.mark.parametrize("propagation", ["self_training", "widest_path"])
def test_pseudo_labels_agree_with_the_classifier(tmp_path, propagation):
    """Precision first: every collected clip's pseudo-label is C's own
    prediction (self-training by construction; the graph by agreement), and
    the refresh reports self-training's precision beside the graph's."""
    config = tiny_config(use_translation=False, propagation=propagation,
                         pseudo_label_top_fraction=1.0, pseudo_label_agreement=True,
                         knn_k=3, workdir=str(tmp_path))
    model = tiny_model(config)
    refresh = callbacks_lib.PseudoLabelRefresh(config, _split(6, True, 1),
                                               _split(NUM_UNLABELED, False, 2))
    refresh.set_model(model)
    # One step: the weight average (what the refresh embeds with) is filled
    # at the first update.
    model.train_step({k: v for k, v in tiny_batch().items() if k.startswith("labeled")})
    refresh.on_epoch_begin(config.train.warmup_epochs)
    unlabeled = next(iter(_split(NUM_UNLABELED, False, 2).unbatch().batch(64)))
    with callbacks_lib.saved_weights(model):
        own = np.argmax(model.classifier(unlabeled["logmel"]).numpy(), axis=1)
    collected = model.pseudo_confidences.numpy() > 0
    np.testing.assert_array_equal(model.pseudo_labels.numpy()[collected], own[collected])
    if propagation == "self_training":
        assert collected.any()
    assert set(refresh.last) >= {"pseudo_label_accuracy", "self_training_accuracy",
                                 "classifier_unlabeled_accuracy"}


def _adaptive_model(**overrides):
    values = dict(use_translation=True, use_translation_judge=True, warmup_epochs=2,
                  epochs=10, aux_rampup_epochs=3, warmup_labeled_accuracy=0.9,
                  use_annealing=True, annealing_schedule="linear", tau_min=0.2)
    values.update(overrides)
    model = tiny_model(tiny_config(**values))
    warmup = callbacks_lib.AdaptiveWarmup(model.config.train.warmup_labeled_accuracy)
    warmup.set_model(model)
    return model, warmup


def _state_at(model, epoch):
    model.epoch.assign(float(epoch))
    return (float(model.full_objective_gate()), float(model.aux_weight()),
            float(model.threshold()))


def test_adaptive_warmup_waits_for_the_labeled_fit():
    model, warmup = _adaptive_model()
    assert "warmup_end" in [w.name for w in model.weights]  # checkpointed
    assert model.latest_warmup_end() == 10 - 3
    # Epoch 1 (index 0) is not the last warm-up epoch: nothing is judged.
    logs = {"labeled_accuracy": 0.1}
    warmup.on_epoch_end(0, logs)
    assert model.warmup_end_epoch() == 2 and logs["warmup_end"] == 2.0
    # The last scheduled warm-up epoch with 0.85 < 0.9: one epoch more, twice.
    for epoch, accuracy in ((1, 0.85), (2, 0.89)):
        logs = {"labeled_accuracy": accuracy}
        warmup.on_epoch_end(epoch, logs)
        assert logs["warmup_end"] == epoch + 2
    assert model.warmup_end_epoch() == 4
    # 0.9 reached: warm-up ends; later epochs do not move it.
    warmup.on_epoch_end(3, {"labeled_accuracy": 0.9})
    warmup.on_epoch_end(4, {"labeled_accuracy": 0.1})
    assert model.warmup_end_epoch() == 4
    # The schedule follows the end: gate and ramp start at epoch index 4, and
    # annealing runs from τ = 1 there to τ_min over the 10 - 4 - 1 = 5 epochs left.
    gate, aux, tau = _state_at(model, 3)
    assert (gate, aux, tau) == (0.0, 0.0, 1.0)
    gate, aux, tau = _state_at(model, 4)
    assert gate == 1.0 and aux == pytest.approx(math.exp(-5 * (2 / 3) ** 2), rel=1e-5)
    assert tau == pytest.approx(1.0)
    gate, aux, tau = _state_at(model, 6)
    assert aux == pytest.approx(1.0)
    assert tau == pytest.approx(1.0 - 0.8 * 2 / 5, rel=1e-6)
    assert _state_at(model, 9)[2] == pytest.approx(0.2, rel=1e-6)


def test_adaptive_warmup_stops_at_its_latest_end():
    model, warmup = _adaptive_model(warmup_max_epochs=3)
    for epoch in range(6):
        warmup.on_epoch_end(epoch, {"labeled_accuracy": 0.0})
    assert model.warmup_end_epoch() == 3
    with pytest.raises(RuntimeError, match="labeled_accuracy"):
        _adaptive_model()[1].on_epoch_end(1, {})


def test_judge_and_pseudo_labels_start_when_the_adaptive_warmup_ends(tmp_path):
    model, warmup = _adaptive_model(use_pseudo_labels=True, propagation="self_training",
                                    pseudo_label_every=2, workdir=str(tmp_path))
    snapshot = callbacks_lib.JudgeSnapshot()
    snapshot.set_model(model)
    refresh = callbacks_lib.PseudoLabelRefresh(model.config, _split(6, True, 1),
                                               _split(NUM_UNLABELED, False, 2))
    refresh.set_model(model)
    warmup.on_epoch_end(1, {"labeled_accuracy": 0.5})  # warm-up to epoch index 3
    assert model.warmup_end_epoch() == 3
    assert [e for e in range(10) if refresh._due(e)] == [3, 5, 7, 9]
    model.train_step(tiny_batch())
    before = _values(model.judge.weights)
    snapshot.on_epoch_begin(2)  # the fixed schedule's end: still warm-up
    for a, b in zip(before, _values(model.judge.weights)):
        np.testing.assert_array_equal(a, b)
    snapshot.on_epoch_begin(3)
    with callbacks_lib.saved_weights(model):
        expected = _values(model.classifier.weights)
    for a, b in zip(expected, _values(model.judge.weights)):
        np.testing.assert_array_equal(a, b)


def test_fixed_warmup_has_no_adaptive_state():
    model = tiny_model(tiny_config(warmup_epochs=2, epochs=4))
    assert not model.adaptive_warmup
    assert "warmup_end" not in [w.name for w in model.weights]
    assert model.warmup_end_epoch() == 2
    assert _state_at(model, 1)[0] == 0.0 and _state_at(model, 2)[0] == 1.0
