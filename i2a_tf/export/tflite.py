"""TFLite / LiteRT models: conversion, metadata, and a runner.

Every variant converts `ServingModule.lite_function` (waveform [1, samples] ->
probabilities [1, C], any length; a speaker-normalised model also takes
speaker_moments [1, 1 + 2 * mels]) with TFLite builtin ops only: the LiteRT
runtime of `ai-edge-litert` cannot run Select TF ops.

Variants:
  float32        the graph as is.
  dynamic_range  int8 weights, float activations (Optimize.DEFAULT, no data).
  int8           int8 weights and activations, ranges calibrated on training
                 clips. With `int8_frontend='float'` (the default) the front end
                 (STFT, power, mel projection, log, trim, normalisation) stays in
                 float and only the classifier is quantized: the power spectrum
                 spans ~12 decades and int8 cannot hold it (a fully quantized
                 model agreed with the float model on 41 % of EmoDB test clips;
                 BUILD.md). The front end is selected by its tensor names (the
                 `frontend/` scope) through TFLite's selective quantization
                 (`QuantizationDebugger` with denylisted nodes). Weight scales
                 per output channel or per tensor (`--int8_weights`).

Tensor names other than the inputs' and outputs' are stripped (they are debug
strings, ~3 % of an int8 model), and the client JSON (class names, front end) is
embedded as flatbuffer metadata, so a `.tflite` file is self-describing.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

from i2a_tf.export.serving import CLIENT_JSON, FRONTEND_SCOPE, SPEAKER_INPUT

Representative = Callable[[], Iterable[list[np.ndarray]]]


def convert(lite_function, variant: str, representative: Representative | None = None,
            int8_frontend: str = "float", per_channel: bool = True) -> bytes:
    """Converts a `tf.function` with one input signature to a TFLite flatbuffer
    (builtin ops only; the variables it captures become constants).

    `per_channel=False` gives the int8 variant one weight scale per tensor
    instead of one per output channel (fewer bytes, coarser weights)."""
    def converter():
        c = tf.lite.TFLiteConverter.from_concrete_functions(
            [lite_function.get_concrete_function()], lite_function)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return c

    if variant == "float32":
        return converter().convert()
    if variant == "dynamic_range":
        c = converter()
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        return c.convert()
    if variant != "int8":
        raise ValueError(f"unknown TFLite variant {variant!r}")
    if representative is None:
        raise ValueError("the int8 variant needs a representative dataset")
    c = converter()
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = representative
    # The converter's switch for this (read by the quantization debugger too).
    c._experimental_disable_per_channel = not per_channel
    if int8_frontend == "int8":
        return c.convert()
    float_model = flatbuffer_utils.convert_bytearray_to_object(converter().convert())
    frontend_nodes = [t.name.decode() for t in float_model.subgraphs[0].tensors
                      if t.name and t.name.decode().startswith(FRONTEND_SCOPE + "/")]
    if not frontend_nodes:
        raise RuntimeError(f"no '{FRONTEND_SCOPE}/' tensors in the float model: "
                           "cannot keep the front end in float")

    def one_clip():  # the debugger runs this through its instrumented model
        yield next(iter(representative()))

    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=frontend_nodes)
    with warnings.catch_warnings():
        # The debugger runs the deprecated tf.lite.Interpreter internally.
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=c, debug_dataset=one_clip, debug_options=options)
        return debugger.get_nondebug_quantized_model()


def finalize(model: bytes, metadata: dict) -> bytes:
    """Strips inner tensor names and embeds `metadata` as CLIENT_JSON."""
    tree = flatbuffer_utils.convert_bytearray_to_object(model)
    for subgraph in tree.subgraphs:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = None
    buffer = flatbuffer_utils.schema_fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), np.uint8)
    tree.buffers.append(buffer)
    entry = flatbuffer_utils.schema_fb.MetadataT()
    entry.name = CLIENT_JSON.encode()
    entry.buffer = len(tree.buffers) - 1
    tree.metadata = [*(tree.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def read_metadata(model: bytes) -> dict | None:
    """The embedded CLIENT_JSON of a `.tflite` file, or None."""
    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    for entry in tree.metadata or []:
        if entry.name and entry.name.decode() == CLIENT_JSON:
            return json.loads(bytes(tree.buffers[entry.buffer].data).decode())
    return None


class LiteModel:
    """A `.tflite` classifier run by the LiteRT interpreter (`ai-edge-litert`).

    `probabilities(waveform)` takes one clip, [samples] float32, of any length
    (and the speaker's summed moments, for a speaker-normalised model).
    `runtime` says what runs it: 'xnnpack' (LiteRT's default CPU delegate), or
    'builtin' when XNNPack refuses the graph (seen with an int8 model of a
    collapsed classifier whose activations have degenerate ranges); the
    fallback is logged, and recorded in export_report.json.
    """

    def __init__(self, model: bytes, num_threads: int | None = None,
                 name: str = "TFLite model"):
        self._model = model
        self.name = name  # what errors call it (the file, when there is one)
        self._num_threads = num_threads
        self.runtime = "xnnpack"
        self._build()

    def _build(self, resolver=None) -> None:
        from ai_edge_litert.interpreter import Interpreter
        options = {} if resolver is None else {"experimental_op_resolver_type": resolver}
        self._interpreter = Interpreter(model_content=self._model,
                                        num_threads=self._num_threads, **options)
        inputs = self._interpreter.get_input_details()
        speaker = [d["index"] for d in inputs if SPEAKER_INPUT in d["name"]]
        self._speaker_input = speaker[0] if speaker else None
        self._input = next(d["index"] for d in inputs if d["index"] not in speaker)
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._length = None

    @property
    def speaker_normalised(self) -> bool:
        """Whether the model takes `speaker_moments` beside the waveform."""
        return self._speaker_input is not None

    def _set(self, waveform: np.ndarray, speaker_moments: np.ndarray | None) -> None:
        waveform = np.asarray(waveform, np.float32)[None, :]
        if (speaker_moments is None) != (self._speaker_input is None):
            raise ValueError(
                f"{self.name}: a speaker-normalised TFLite model; pass the "
                "speaker's summed speaker_moments" if self._speaker_input is not None
                else f"{self.name}: this TFLite model takes no speaker_moments")
        if self._length != waveform.shape[1]:
            self._interpreter.resize_tensor_input(self._input, waveform.shape)
            self._interpreter.allocate_tensors()
            self._length = waveform.shape[1]
        self._interpreter.set_tensor(self._input, waveform)
        if self._speaker_input is not None:
            self._interpreter.set_tensor(
                self._speaker_input, np.asarray(speaker_moments, np.float32)[None, :])

    def _invoke(self, waveform: np.ndarray, speaker_moments: np.ndarray | None) -> None:
        self._set(waveform, speaker_moments)
        try:
            self._interpreter.invoke()
        except RuntimeError as error:
            if self.runtime != "xnnpack" or "XNNPACK" not in str(error):
                raise
            from ai_edge_litert.interpreter import OpResolverType
            logging.getLogger(__name__).warning(
                "XNNPack cannot run this TFLite model (%s); using the builtin "
                "kernels", str(error).splitlines()[0][:200])
            self.runtime = "builtin"
            self._build(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self._set(waveform, speaker_moments)
            self._interpreter.invoke()

    def probabilities(self, waveform: np.ndarray,
                      speaker_moments: np.ndarray | None = None) -> np.ndarray:
        """[C] class probabilities of one clip; `speaker_moments` [1 + 2 * mels]
        (the speaker's summed moments) for a speaker-normalised model only."""
        self._invoke(waveform, speaker_moments)
        return self._interpreter.get_tensor(self._output)[0].copy()
