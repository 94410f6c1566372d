"""Class-conditional generator G: (face code, class, noise) -> log-mel."""

from __future__ import annotations

import math

import keras
from keras import layers

from i2a_tf.models.face_encoder import _groups


def build_generator(num_classes: int, num_mels: int, num_frames: int, *,
                    code_dim: int, class_embedding_dim: int, noise_dim: int,
                    width: int, name: str = "generator") -> keras.Model:
    """G(h_f, y, z): translated log-mel spectrograms.

    Inputs: `face_code` `[B, code_dim]` float32, `labels` `[B]` int32 class ids,
    `noise` `[B, noise_dim]` float32 (no such input when noise_dim is 0).
    Output: `[B, num_mels, num_frames]` float32 on the scale of normalised
    log-mels (linear output; real clips are about zero-mean, unit-variance per
    band).

    The class enters by concatenating a learned class embedding with the code
    and the noise (DESIGN.md allows this or conditional batch norm; this keeps
    the network free of batch statistics). A dense layer maps to
    `[ceil(T/8), 4·width]`; three blocks of 2× upsampling over time, a
    temporal conv (kernel 5), group norm and LeakyReLU grow it to T/1 frames;
    a last conv maps channels to mel bands, and the result is cropped to T
    frames. Temporal convs with bands as channels mirror the classifier and
    keep the step cheap on CPUs.
    """
    face_code = keras.Input((code_dim,), name="face_code")
    labels = keras.Input((), dtype="int32", name="labels")
    inputs = [face_code, labels]
    parts = [face_code, layers.Embedding(num_classes, class_embedding_dim,
                                         name="class_embedding")(labels)]
    if noise_dim:
        noise = keras.Input((noise_dim,), name="noise")
        inputs.append(noise)
        parts.append(noise)
    x = layers.Concatenate(name="condition")(parts)
    length = math.ceil(num_frames / 8)
    channels = width * 4
    x = layers.Dense(length * channels, name="project")(x)
    x = layers.Reshape((length, channels), name="grid")(x)
    x = layers.LeakyReLU(0.2, name="project_act")(x)
    for block in range(3):
        channels = width * 2 ** (2 - block)
        x = layers.UpSampling1D(2, name=f"up{block}")(x)
        x = layers.Conv1D(channels, 5, padding="same", name=f"conv{block}")(x)
        x = layers.GroupNormalization(groups=_groups(channels), name=f"norm{block}")(x)
        x = layers.LeakyReLU(0.2, name=f"act{block}")(x)
    x = layers.Conv1D(num_mels, 5, padding="same", name="to_mels")(x)
    x = layers.Cropping1D((0, length * 8 - num_frames), name="crop")(x)
    logmel = layers.Permute((2, 1), name="logmel")(x)
    return keras.Model(inputs, logmel, name=name)
