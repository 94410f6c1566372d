"""Projection discriminator D with spectral normalisation (Miyato & Koyama 2018)."""

from __future__ import annotations

import keras
from keras import layers, ops


class ClassProjection(layers.Layer):
    """`<embed(y), h>` per example, and 0 where y < 0 (a real clip without label).

    Inputs: features `[B, F]` float32, labels `[B]` int32 in [-1, C).
    Output: `[B, 1]` float32.
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def build(self, input_shape):
        features_shape, _ = input_shape
        self.embeddings = self.add_weight(
            shape=(self.num_classes, features_shape[-1]), name="embeddings",
            initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, inputs):
        features, labels = inputs
        labels = ops.cast(labels, "int32")
        known = ops.cast(labels >= 0, features.dtype)
        class_vectors = ops.take(self.embeddings, ops.maximum(labels, 0), axis=0)
        projection = ops.sum(features * ops.cast(class_vectors, features.dtype), axis=-1)
        return ops.expand_dims(projection * known, -1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def build_discriminator(num_classes: int, num_mels: int, num_frames: int, *,
                        width: int, name: str = "discriminator") -> keras.Model:
    """D(s, y): real-vs-translated score of log-mel spectrograms.

    Inputs: `logmel` `[B, mels, T]` float32 (normalised log-mel), `labels` `[B]`
    int32 class id, or −1 for a real clip whose class is unknown (unlabeled,
    not pseudo-labeled): its score is the unconditional term alone.
    Output: `[B]` float32 logits, `psi(phi(s)) + <embed(y), phi(s)>`.

    Three stride-2 temporal convs (kernel 4; width, 2·width, 4·width
    channels; bands as input channels) with LeakyReLU, global average pooling
    over time, then the unconditional and the projection terms. Every conv and
    dense kernel is wrapped in Keras 3 `SpectralNormalization`, which
    renormalises the kernel on each `training=True` call.
    """
    logmel = keras.Input((num_mels, num_frames), name="logmel")
    labels = keras.Input((), dtype="int32", name="labels")
    x = layers.Permute((2, 1), name="frames_first")(logmel)
    for block in range(3):
        x = layers.SpectralNormalization(
            layers.Conv1D(width * 2 ** block, 4, strides=2, padding="same"),
            name=f"conv{block}")(x)
        x = layers.LeakyReLU(0.2, name=f"act{block}")(x)
    features = layers.GlobalAveragePooling1D(name="pool")(x)
    unconditional = layers.SpectralNormalization(layers.Dense(1), name="psi")(features)
    projection = ClassProjection(num_classes, name="projection")([features, labels])
    score = layers.Add(name="score")([unconditional, projection])
    score = layers.Reshape((), name="logits")(score)
    return keras.Model([logmel, labels], score, name=name)
