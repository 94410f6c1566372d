"""The four networks of Image2Audio (DESIGN.md "Networks").

Functional Keras models built from core layers only, so the classifier saves and
loads as a `.keras` file without custom objects and exports to TFLite builtins.
Models never import `training`.
"""

from i2a_tf.models.classifier import EMBEDDING_LAYER
from i2a_tf.models.classifier import build_classifier
from i2a_tf.models.discriminator import build_discriminator
from i2a_tf.models.face_encoder import build_face_encoder
from i2a_tf.models.generator import build_generator

__all__ = [
    "EMBEDDING_LAYER",
    "build_classifier",
    "build_discriminator",
    "build_face_encoder",
    "build_generator",
]
