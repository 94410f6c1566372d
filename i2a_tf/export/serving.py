"""The served computation: raw audio (or log-mel, or training records) in,
class probabilities out, with the front end and its statistics inside the graph.

`ServingModule` wraps the trained classifier C with the log-mel front end of
`i2a_tf.data.frontend` (the code the training pipeline runs, not a copy) and the
band statistics of the training split. Its three signatures are what the
SavedModel serves; `lite_function` is the graph the TFLite models are converted
from. A model trained with `--speaker_normalisation` normalises each clip by its
speaker's statistics: its waveform and examples signatures also take
`speaker_moments` (the summed output of a fourth signature, `speaker_moments`,
over the speaker's clips), and so does its TFLite model.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from i2a_tf.config import FrontEndConfig
from i2a_tf.data import frontend, schema
from i2a_tf.data.frontend import BandStatistics

# The JSON clients read (SavedModel `assets/`, TFLite metadata and folder).
CLIENT_JSON = "i2a_model.json"
CLIENT_JSON_VERSION = 1
# Tensor-name prefix of the front-end ops; the int8 TFLite model keeps them in float.
FRONTEND_SCOPE = "frontend"
WAVEFORM_SIGNATURE = "serving_default"
LOGMEL_SIGNATURE = "classify_logmel"
EXAMPLES_SIGNATURE = "serve_examples"
SPEAKER_SIGNATURE = "speaker_moments"
SPEAKER_INPUT = "speaker_moments"


def existing_versions(base: str) -> list[int]:
    """Integer-named version folders under a TF Serving base path, ascending
    (TF Serving ignores every other name, e.g. the exporter's `.tmp-*`)."""
    if not os.path.isdir(base):
        return []
    return sorted(int(name) for name in os.listdir(base)
                  if name.isdigit() and os.path.isdir(os.path.join(base, name)))


def window_samples(config: FrontEndConfig) -> int:
    """Samples that make exactly `num_frames` frames (2.015 s at the defaults):
    the span of audio one forward pass classifies."""
    return (config.num_frames - 1) * config.frame_step + config.frame_length


def client_metadata(class_names: tuple[str, ...], statistics: BandStatistics,
                    config: FrontEndConfig) -> dict:
    """What a client needs beside the model: label order and the front end."""
    metadata = {
        "format_version": CLIENT_JSON_VERSION,
        "class_names": list(class_names),
        "sample_rate": config.sample_rate,
        "window_samples": window_samples(config),
        "frontend": dataclasses.asdict(config),
        "normalisation": {"mean": [float(v) for v in statistics.mean],
                          "std": [float(v) for v in statistics.std]},
        "inputs": {
            WAVEFORM_SIGNATURE: "waveform: float32 [batch, samples], mono, in [-1, 1], "
                                "at sample_rate, one clip per row (a clip shorter "
                                "than one STFT window is zero-padded)",
            LOGMEL_SIGNATURE: "logmel: float32 [batch, num_mels, num_frames], "
                              "normalised log-mel",
            EXAMPLES_SIGNATURE: "examples: serialized tf.train.Example [batch] in "
                                "the training audio schema (i2a_tf/data/schema.py); "
                                "only waveform, num_samples and sample_rate are read",
        },
        "outputs": "probabilities float32 [batch, classes] (in class_names order), "
                   "class_ids int64 [batch], class_names string [batch]",
    }
    if config.speaker_normalisation != "none":
        moments = (f"{SPEAKER_INPUT}: float32 [batch, {1 + 2 * config.num_mels}], "
                   "each row's speaker's summed speaker_moments")
        metadata["speaker_normalisation"] = {
            "mode": config.speaker_normalisation,
            "how": "each clip is normalised by its speaker's log-mel band "
                   "statistics: run speaker_moments on the speaker's clips (as "
                   "many as there are, unlabeled), sum its rows (in float64 if "
                   f"you can), and pass the sum as {SPEAKER_INPUT} with every "
                   "clip of that speaker; a row with 0 frames means 'speaker "
                   "unknown' and gets the training split's statistics",
            "moments": "voiced frames n, per-band sums of (x - c), per-band sums "
                       "of (x - c)^2, over the voiced log-mel frames x of the "
                       "clip, centred on c = normalisation.mean",
            "mean_only": "in 'mean' mode the sums of squares are read but unused"
                         if config.speaker_normalisation == "mean" else None}
        metadata["inputs"][WAVEFORM_SIGNATURE] += "; " + moments
        metadata["inputs"][EXAMPLES_SIGNATURE] += "; " + moments
        metadata["inputs"][SPEAKER_SIGNATURE] = (
            "waveform: float32 [batch, samples], clips of one speaker, one whole "
            "clip per row (rows are not trimmed of padding beyond trim_db's "
            "silence trimming: send clips of different lengths in separate "
            "requests) -> moments float32 [batch, 1 + 2 * num_mels], one row per clip")
    return metadata


class ServingModule(tf.Module):
    """Classifier + front end + statistics, with the serving signatures.

    Args:
      classifier: the trained Keras classifier, normalised log-mel
        [B, mels, T] -> logits [B, C].
      class_names: label names in class-id order.
      statistics: the per-band normalisation statistics of the training split.
      config: the front end the classifier was trained with.
      client_json: a file to carry in the SavedModel's `assets/` (optional).
    """

    def __init__(self, classifier, class_names: tuple[str, ...],
                 statistics: BandStatistics, config: FrontEndConfig,
                 client_json: str | None = None):
        super().__init__(name="image2audio")
        # Not an attribute: tf.Module would track the Keras model, whose
        # variables TF Serving's loader does not restore (see below).
        self._logits = lambda logmel: classifier(logmel, training=False)
        self._config = config
        self._statistics = statistics
        self._class_names = tf.constant(list(class_names))
        if client_json is not None:
            self.client_json = tf.saved_model.Asset(client_json)
        spec = tf.TensorSpec
        self._by_speaker = config.speaker_normalisation != "none"
        speaker = [self._moments_spec(None)] if self._by_speaker else []
        self.serve_waveform = tf.function(
            self._serve_waveform,
            input_signature=[spec([None, None], tf.float32, name="waveform"), *speaker])
        self.classify_logmel = tf.function(
            self._classify_logmel,
            input_signature=[spec([None, config.num_mels, config.num_frames],
                                  tf.float32, name="logmel")])
        self.serve_examples = tf.function(
            self._serve_examples,
            input_signature=[spec([None], tf.string, name="examples"), *speaker])
        if self._by_speaker:
            self.speaker_moments = tf.function(
                self._speaker_moments,
                input_signature=[spec([None, None], tf.float32, name="waveform")])
        # Track the tf.Variables the traced graphs read, not their Keras wrappers:
        # with only the wrappers tracked (a plain `tf.saved_model.save` of a
        # Keras 3 model), the TF1 / C++ loader that TF Serving and
        # `saved_model_cli run` use fails with "Could not find variable"
        # (keras-team/keras#19274, tensorflow/tensorflow#72963); with both
        # tracked, every weight is stored twice (keras-team/keras#23553).
        # Sorted by name (then shape), not in capture order, which varies
        # between processes: the same weights give the same SavedModel bytes.
        self._variables = sorted(
            {id(v): v for function in self.signatures().values()
             for v in function.variables}.values(),
            key=lambda v: (v.name, tuple(v.shape)))

    @property
    def speaker_normalised(self) -> bool:
        """Whether the waveform signatures take a `speaker_moments` input."""
        return self._by_speaker

    def _moments_spec(self, batch: int | None) -> tf.TensorSpec:
        return tf.TensorSpec([batch, 1 + 2 * self._config.num_mels], tf.float32,
                             name=SPEAKER_INPUT)

    def signatures(self) -> dict:
        functions = {WAVEFORM_SIGNATURE: self.serve_waveform,
                     LOGMEL_SIGNATURE: self.classify_logmel,
                     EXAMPLES_SIGNATURE: self.serve_examples}
        if self._by_speaker:
            functions[SPEAKER_SIGNATURE] = self.speaker_moments
        return {name: function.get_concrete_function()
                for name, function in functions.items()}

    def _probabilities(self, logmel: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(self._logits(logmel), axis=-1)

    def _outputs(self, logmel: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self._probabilities(logmel)
        class_ids = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "class_ids": class_ids,
                "class_names": tf.gather(self._class_names, class_ids)}

    def _features(self, waveform: tf.Tensor, num_samples: tf.Tensor,
                  compact_mel: bool = False,
                  speaker_moments: tf.Tensor | None = None) -> tf.Tensor:
        with tf.name_scope(FRONTEND_SCOPE):
            speaker = None
            if self._by_speaker:
                speaker = frontend.speaker_row_statistics(
                    *frontend.moment_sums_statistics(speaker_moments, self._statistics),
                    self._statistics, self._config.speaker_normalisation)
            return frontend.waveform_features(waveform, num_samples, self._statistics,
                                              self._config, compact_mel=compact_mel,
                                              speaker=speaker)

    def _whole_rows(self, waveform: tf.Tensor) -> tf.Tensor:
        """[B] every row's full length (a served batch is not zero-padded)."""
        return tf.fill(tf.shape(waveform)[:1], tf.shape(waveform)[1])

    def _serve_waveform(self, waveform, speaker_moments=None):
        return self._outputs(self._features(waveform, self._whole_rows(waveform),
                                            speaker_moments=speaker_moments))

    def _classify_logmel(self, logmel):
        return self._outputs(logmel)

    def _serve_examples(self, examples, speaker_moments=None):
        features = schema.parse_audio(examples, served_only=True)
        rate_ok = tf.debugging.assert_equal(
            features["sample_rate"], tf.constant(self._config.sample_rate, tf.int64),
            message=f"serve_examples: records must be at {self._config.sample_rate} Hz")
        with tf.control_dependencies([rate_ok]):
            num_samples = tf.cast(features["num_samples"], tf.int32)
        # Clips differ in length: decode each padded to the longest; the front
        # end ignores samples past num_samples.
        longest = tf.reduce_max(tf.concat([num_samples, [1]], axis=0))
        samples = tf.io.decode_raw(features["waveform"], tf.int16, little_endian=True,
                                   fixed_length=2 * longest)
        waveform = schema.waveform_to_float(samples)
        return self._outputs(self._features(waveform, num_samples,
                                            speaker_moments=speaker_moments))

    def _speaker_moments(self, waveform):
        with tf.name_scope(FRONTEND_SCOPE):
            return {"moments": frontend.clip_band_moments(
                waveform, self._whole_rows(waveform), self._config,
                self._statistics.mean)}

    def lite_function(self):
        """`waveform [1, samples] (, speaker_moments [1, 1 + 2 * mels]) ->
        probabilities [1, C]`, for TFLite: the compact mel projection (a 64 x 20
        table instead of a 257 x 64 matrix) and one output, since class names
        travel in the model's metadata. The second input only for a speaker-
        normalised model."""
        waveform_spec = tf.TensorSpec([1, None], tf.float32, name="waveform")
        if self._by_speaker:
            @tf.function(input_signature=[waveform_spec, self._moments_spec(1)])
            def probabilities(waveform, speaker_moments):
                features = self._features(waveform, self._whole_rows(waveform),
                                          compact_mel=True,
                                          speaker_moments=speaker_moments)
                return {"probabilities": self._probabilities(features)}
            return probabilities

        @tf.function(input_signature=[waveform_spec])
        def probabilities(waveform):
            features = self._features(waveform, self._whole_rows(waveform),
                                      compact_mel=True)
            return {"probabilities": self._probabilities(features)}
        return probabilities


def generated_waveforms(config: FrontEndConfig, seconds: float, batch: int,
                        seed: int) -> np.ndarray:
    """[batch, samples] float32 harmonic tones in light noise, faded in and out
    over 0.1 s: inputs that exercise the graph without carrying anyone's speech
    (the corpora are research-only; nothing of them goes into an export)."""
    rng = np.random.default_rng(seed)
    rate = config.sample_rate
    t = np.arange(int(seconds * rate)) / rate
    rows = []
    for _ in range(batch):
        f0 = rng.uniform(100, 300)
        voiced = sum(0.3 / k * np.sin(2 * np.pi * f0 * k * t) for k in (1, 2, 3))
        voiced = voiced + 0.01 * rng.standard_normal(t.shape)
        ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.1)
        rows.append(voiced * ramp)
    return np.asarray(rows, np.float32)
