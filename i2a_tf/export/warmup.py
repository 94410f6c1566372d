"""TF Serving warm-up: `assets.extra/tf_serving_warmup_requests`.

A TFRecord file of `PredictionLog` protos (from `tensorflow-serving-api`). TF
Serving replays them when it loads a version, before it reports the version
available, so the first real requests do not pay for graph initialisation.
The requests carry generated tones, never corpus audio.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from i2a_tf.config import FrontEndConfig
from i2a_tf.export.serving import (SPEAKER_INPUT, SPEAKER_SIGNATURE, WAVEFORM_SIGNATURE,
                                   generated_waveforms, window_samples)

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


def warmup_batches(config: FrontEndConfig) -> list[np.ndarray]:
    """One window at batch 1 and 2, and half a window at batch 1 (~450 KB at
    the defaults): every dimension is dynamic, so these trace the whole graph."""
    seconds = window_samples(config) / config.sample_rate
    shapes = [(seconds, 1), (seconds, 2), (seconds / 2, 1)]
    return [generated_waveforms(config, s, b, seed=n) for n, (s, b) in enumerate(shapes)]


def write_warmup_requests(saved_model_dir: str, model_name: str,
                          batches: list[np.ndarray],
                          speaker_moments: np.ndarray | None = None) -> str:
    """Writes one PredictRequest for `serving_default` per batch; returns the path.

    `speaker_moments` [1 + 2 * mels]: for a speaker-normalised model, the
    moments every row's request carries, and one more request runs the
    `speaker_moments` signature on the first batch."""
    path = os.path.join(saved_model_dir, WARMUP_DIR, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def request(signature: str, inputs: dict) -> bytes:
        message = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
            name=model_name, signature_name=signature))
        for name, value in inputs.items():
            message.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
            request=message)).SerializeToString()

    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            inputs = {"waveform": batch}
            if speaker_moments is not None:
                inputs[SPEAKER_INPUT] = np.tile(
                    np.asarray(speaker_moments, np.float32)[None], [len(batch), 1])
            writer.write(request(WAVEFORM_SIGNATURE, inputs))
        if speaker_moments is not None and batches:
            writer.write(request(SPEAKER_SIGNATURE, {"waveform": batches[0]}))
    return path


def read_warmup_requests(saved_model_dir: str) -> list[predict_pb2.PredictRequest]:
    """The PredictRequests of a SavedModel's warm-up file, in order."""
    path = os.path.join(saved_model_dir, WARMUP_DIR, WARMUP_FILE)
    requests = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests


def run_warmup_requests(saved_model_dir: str) -> list[dict[str, np.ndarray]]:
    """Runs every warm-up request as TF Serving does: the SavedModel loaded into
    a TF1 session (the C++ SavedModelBundle path, not `tf.saved_model.load`),
    inputs fed and outputs fetched by the signature's tensor names. Returns the
    outputs; raises if a request does not run."""
    outputs = []
    requests = read_warmup_requests(saved_model_dir)  # eagerly, before the graph
    # The TF1 loader is deprecated for users of TF2 APIs, which is not what this
    # is: it is TF Serving's loading path, on purpose; its warning is silenced.
    from tensorflow.python.util import deprecation
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session, \
            deprecation.silence():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"],
                                                          saved_model_dir)
        for request in requests:
            signature = meta_graph.signature_def[request.model_spec.signature_name]
            feeds = {signature.inputs[name].name: tf.make_ndarray(proto)
                     for name, proto in request.inputs.items()}
            fetches = {name: info.name for name, info in signature.outputs.items()}
            outputs.append(session.run(fetches, feeds))
    return outputs
