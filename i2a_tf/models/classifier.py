"""Audio classifier C = h ∘ φ, the model that is trained, evaluated and deployed."""

from __future__ import annotations

import keras
from keras import layers, ops

from i2a_tf.models.face_encoder import _groups

# The layer whose output is φ(x); density banks and the pseudo-label graph use it.
EMBEDDING_LAYER = "embedding"


@keras.saving.register_keras_serializable(package="i2a_tf")
class TimeStatistics(layers.Layer):
    """`[B, T, F]` -> `[B, 2F]`: each channel's mean and standard deviation
    over time (std as sqrt(mean of squared deviations + 1e-6), so its gradient
    is finite on a constant input)."""

    def call(self, x):
        mean = ops.mean(x, axis=1)
        variance = ops.mean(ops.square(x - ops.expand_dims(mean, 1)), axis=1)
        return ops.concatenate([mean, ops.sqrt(variance + 1e-6)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[2])


def build_classifier(num_classes: int, num_mels: int, num_frames: int, *,
                     width: int, embedding_dim: int, dropout: float,
                     statistics: bool = False,
                     name: str = "classifier") -> keras.Model:
    """C: `[B, mels, T]` float32 normalised log-mel -> `[B, C]` float32 logits.

    φ: temporal convolutions with the mel bands as channels (kernel 5 over
    frames; three blocks of width, 2·width, 4·width channels, each two convs
    with group norm and ReLU, then 2× max pooling over time), global average
    and max pooling over time, concatenated, and a dense ReLU layer named
    `embedding` (`[B, embedding_dim]`, the φ embedding). h: dropout and a linear
    layer named `logits`. With `statistics`, the input's per-band mean and
    standard deviation over time (`TimeStatistics`, the logistic-regression
    baseline's features, there over voiced frames) join the pooled features
    before `embedding`: a direct path for the utterance-level cues a linear
    model on them already uses well at few labels.

    Why 1-D: on 2 CPU cores a 2-D CNN over the full 64 × 200 map cost ~10× the
    MACs for no gain at these label budgets; pooling over time is what the
    strong log-mel-statistics baselines do. Group norm instead of batch norm:
    an example's output never depends on the rest of its batch or on the
    replica count.
    """
    logmel = keras.Input((num_mels, num_frames), name="logmel")
    x = logmel_frames = layers.Permute((2, 1), name="frames_first")(logmel)  # [B, T, mels]
    for block in range(3):
        channels = width * 2 ** block
        for conv in range(2):
            x = layers.Conv1D(channels, 5, padding="same", use_bias=False,
                              name=f"conv{block}_{conv}")(x)
            x = layers.GroupNormalization(groups=_groups(channels),
                                          name=f"norm{block}_{conv}")(x)
            x = layers.ReLU(name=f"relu{block}_{conv}")(x)
        x = layers.MaxPooling1D(2, padding="same", name=f"pool{block}")(x)
    pooled = [layers.GlobalAveragePooling1D(name="average")(x),
              layers.GlobalMaxPooling1D(name="max")(x)]
    if statistics:
        pooled.append(TimeStatistics(name="band_statistics")(logmel_frames))
    pooled = layers.Concatenate(name="pooled")(pooled)
    embedding = layers.Dense(embedding_dim, activation="relu",
                             name=EMBEDDING_LAYER)(pooled)
    x = layers.Dropout(dropout, name="dropout")(embedding)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(logmel, logits, name=name)

