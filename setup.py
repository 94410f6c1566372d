"""Installs i2a_tf: Image2Audio semi-supervised speech emotion recognition."""

import setuptools

setuptools.setup(
    name="i2a_tf",
    version="0.1.0",
    description=(
        "Image2Audio in TensorFlow 2 / Keras 3: semi-supervised speech emotion "
        "recognition from few labeled clips, unlabeled speech and labeled faces."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["i2a_tf", "i2a_tf.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<3.16",
        "tensorflow-probability>=0.25,<0.26",
        # tensorflow-probability refuses to import without tf-keras.
        "tf-keras>=2.21,<2.22",
        "numpy>=1.26,<3",
        # tfx-bsl (the beam extra) still requires absl-py < 2; i2a_tf works with both.
        "absl-py>=1.4,<3",
        "scikit-learn>=1.5,<2",
        "scipy>=1.13,<2",
        "soundfile>=0.12,<1",
        "pillow>=10,<14",
        # tf.summary needs it for the training logs; tensorflow 2.21 does not pull it in.
        "tensorboard>=2.21,<2.22",
        # --mode=export: PredictionLog protos for the TF Serving warm-up file
        # (their protos have not changed since 2.19; tfx-bsl 1.21, in the beam
        # extra, requires < 2.20).
        "tensorflow-serving-api>=2.19.1,<2.22",
        # Runs the TFLite models (tf.lite.Interpreter is deprecated).
        "ai-edge-litert>=2.3,<3",
        # --mode=study: the report's plots.
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        # pytest-xdist: the suite runs on two processes (pytest.ini), ~9 min
        # instead of 15-17 serially on 2 cores.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4"],
        # --prepare_runner=beam: prepare as an Apache Beam pipeline, statistics
        # from tf.Transform analyzers (versions that install beside tensorflow 2.21).
        "beam": [
            "apache-beam>=2.77,<2.78",
            "tensorflow-transform==1.21.0",
            "tfx-bsl==1.21.0",
        ],
    },
)
