"""Shapes of the four networks at batch 5, and the classifier's .keras round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from i2a_tf import models

B, C, MELS, T = 5, 4, 16, 44  # T not a multiple of 8: the generator must crop.


def test_face_encoder_shape():
    encoder = models.build_face_encoder(24, width=4, code_dim=12)
    code = encoder(tf.zeros([B, 24, 24, 1]))
    assert code.shape == (B, 12) and code.dtype == tf.float32


@pytest.mark.parametrize("noise_dim", [0, 3])
def test_generator_shape(noise_dim):
    generator = models.build_generator(C, MELS, T, code_dim=12, class_embedding_dim=5,
                                       noise_dim=noise_dim, width=4)
    inputs = [tf.ones([B, 12]), tf.constant([0, 1, 2, 3, 0])]
    if noise_dim:
        inputs.append(tf.zeros([B, noise_dim]))
    assert generator(inputs).shape == (B, MELS, T)


def test_generator_output_depends_on_class():
    generator = models.build_generator(C, MELS, T, code_dim=12, class_embedding_dim=5,
                                       noise_dim=0, width=4)
    code = tf.ones([2, 12])
    out = generator([code, tf.constant([0, 1])]).numpy()
    assert not np.allclose(out[0], out[1])


def test_discriminator_shape_and_projection():
    discriminator = models.build_discriminator(C, MELS, T, width=4)
    logmel = tf.random.stateless_normal([B, MELS, T], [1, 2])
    labelled = discriminator([logmel, tf.constant([0, 1, 2, 3, 0])]).numpy()
    unlabelled = discriminator([logmel, tf.fill([B], -1)]).numpy()
    assert labelled.shape == (B,)
    # y = -1 drops the projection term only: the difference is <embed(y), phi(s)>.
    projection = discriminator.get_layer("projection")
    assert not np.allclose(labelled, unlabelled)
    same_class = discriminator([logmel, tf.fill([B], 2)]).numpy()
    assert np.allclose(same_class - unlabelled,
                       _projection(discriminator, logmel, 2), atol=1e-5)
    assert projection.embeddings.shape == (C, 16)


def _projection(discriminator, logmel, class_id):
    import keras
    features = keras.Model(discriminator.inputs, discriminator.get_layer("pool").output)(
        [logmel, tf.fill([B], class_id)])
    vector = discriminator.get_layer("projection").embeddings[class_id]
    return tf.reduce_sum(features * vector, axis=1).numpy()


def test_discriminator_is_spectrally_normalised():
    import keras
    discriminator = models.build_discriminator(C, MELS, T, width=4)
    wrapped = [l for l in discriminator.layers
               if isinstance(l, keras.layers.SpectralNormalization)]
    assert len(wrapped) == 4  # three convs and psi


def test_classifier_and_embedding_shapes(tmp_path):
    import keras
    classifier = models.build_classifier(C, MELS, T, width=4, embedding_dim=7,
                                         dropout=0.5)
    logmel = tf.random.stateless_normal([B, MELS, T], [3, 4])
    assert classifier(logmel).shape == (B, C)
    phi = keras.Model(classifier.input,
                      classifier.get_layer(models.EMBEDDING_LAYER).output)
    assert phi(logmel).shape == (B, 7)
    # Core layers only: reloads without custom objects, same outputs.
    path = str(tmp_path / "c.keras")
    classifier.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(logmel).numpy(), classifier(logmel).numpy(),
                               atol=1e-6)


def test_classifier_output_independent_of_batch():
    """Group norm, not batch norm: an example's logits ignore its batch mates."""
    classifier = models.build_classifier(C, MELS, T, width=4, embedding_dim=7,
                                         dropout=0.0)
    logmel = tf.random.stateless_normal([B, MELS, T], [5, 6])
    together = classifier(logmel, training=True).numpy()
    alone = classifier(logmel[:1], training=True).numpy()
    np.testing.assert_allclose(together[:1], alone, atol=1e-5)


def test_time_statistics_hand_values():
    # [1, T=4, F=2]: channel 0 = 1, 3, 1, 3 (mean 2, std 1); channel 1 constant 5.
    x = tf.constant([[[1.0, 5.0], [3.0, 5.0], [1.0, 5.0], [3.0, 5.0]]])
    got = models.classifier.TimeStatistics()(x).numpy()
    np.testing.assert_allclose(got, [[2.0, 5.0, np.sqrt(1.0 + 1e-6), np.sqrt(1e-6)]],
                               rtol=1e-6)


def test_classifier_with_band_statistics_reloads_and_uses_them(tmp_path):
    """--classifier_statistics: the input's band means and stds reach phi
    (the logits move when only a band's level changes and every conv weight
    is zero), and the saved model reloads with the same outputs."""
    import keras
    classifier = models.build_classifier(C, MELS, T, width=4, embedding_dim=7,
                                         dropout=0.0, statistics=True)
    assert classifier.get_layer("pooled").output.shape[-1] == 2 * 16 + 2 * MELS
    for layer in classifier.layers:
        if layer.name.startswith("conv"):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    logmel = tf.random.stateless_normal([B, MELS, T], [3, 4])
    louder = logmel + tf.one_hot(0, MELS)[None, :, None]
    assert np.abs(classifier(louder).numpy() - classifier(logmel).numpy()).max() > 1e-4
    path = str(tmp_path / "c.keras")
    classifier.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(logmel).numpy(), classifier(logmel).numpy(),
                               atol=1e-6)
