"""i2a_tf: Image2Audio (He et al., CVPR-W 2020) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
