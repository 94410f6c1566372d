"""A tiny Image2Audio model, state and batch shared by the training tests."""

from __future__ import annotations

import numpy as np

NUM_CLASSES, MELS, FRAMES, FACE = 3, 16, 40, 16
NUM_UNLABELED, BANK = 6, 6


def tiny_config(**overrides):
    from i2a_tf import config as config_lib
    values = dict(num_mels=MELS, num_frames=FRAMES, fmax_hz=8000.0,
                  encoder_width=4, face_code_dim=8, class_embedding_dim=4,
                  noise_dim=3, generator_width=4, discriminator_width=4,
                  classifier_width=4, embedding_dim=6, warmup_epochs=0, epochs=2,
                  min_reliability=0.0, classes=("a", "b", "c"), r1_gamma=1.0,
                  # The arithmetic the older tests check by hand; the judge,
                  # ramp and batch normalisers have tests of their own.
                  use_translation_judge=False, aux_rampup_epochs=0,
                  translated_normalizer="weight_sum",
                  unlabeled_normalizer="weight_sum")
    values.update(overrides)
    return config_lib.config_from_flat(values)


def tiny_model(config):
    from i2a_tf.training.trainer import build_model
    return build_model(config, num_classes=NUM_CLASSES, face_size=FACE,
                       num_unlabeled=NUM_UNLABELED, bank_size=BANK)


def set_tiny_state(model):
    """Full objective on: banks filled, every unlabeled clip pseudo-labeled."""
    rng = np.random.default_rng(1)
    model.epoch.assign(1.0)
    model.set_class_banks(rng.standard_normal([BANK, 6]).astype(np.float32),
                          np.array([0, 0, 1, 1, 2, 2]))
    model.set_pseudo_labels(np.arange(NUM_UNLABELED), np.array([0, 1, 2, 0, 1, 2]),
                            np.linspace(0.5, 1.0, NUM_UNLABELED).astype(np.float32))


def tiny_batch(global_batch: int = 4) -> dict:
    rng = np.random.default_rng(2)
    n = global_batch
    return {
        "face_images": rng.uniform(-1, 1, [n, FACE, FACE, 1]).astype(np.float32),
        "face_labels": (np.arange(n) % NUM_CLASSES).astype(np.int32),
        "labeled_logmel": rng.standard_normal([n, MELS, FRAMES]).astype(np.float32),
        "labeled_labels": ((np.arange(n) + 1) % NUM_CLASSES).astype(np.int32),
        "unlabeled_logmel": rng.standard_normal([n, MELS, FRAMES]).astype(np.float32),
        "unlabeled_index": (np.arange(n) % NUM_UNLABELED).astype(np.int32),
    }
