"""Face encoder E: face image -> face code h_f."""

from __future__ import annotations

import keras
from keras import layers


def build_face_encoder(image_size: int, width: int, code_dim: int,
                       name: str = "face_encoder") -> keras.Model:
    """E: `[B, S, S, 1]` float32 in [-1, 1] -> `[B, code_dim]` float32.

    Three stride-2 conv blocks (width, 2·width, 4·width channels) with group
    norm (no batch statistics, so replicas and batch composition never change
    the output), global average pooling and a dense projection.
    """
    images = keras.Input((image_size, image_size, 1), name="face_images")
    x = images
    for block in range(3):
        x = layers.Conv2D(width * 2 ** block, 3, strides=2, padding="same",
                          name=f"conv{block}")(x)
        x = layers.GroupNormalization(groups=_groups(width * 2 ** block),
                                      name=f"norm{block}")(x)
        x = layers.LeakyReLU(0.2, name=f"act{block}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    code = layers.Dense(code_dim, name="face_code")(x)
    return keras.Model(images, code, name=name)


def _groups(channels: int) -> int:
    """Largest group count <= 8 that divides `channels`."""
    return max(g for g in range(1, 9) if channels % g == 0)
