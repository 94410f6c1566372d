"""`--mode=prepare --prepare_runner=beam`: prepare as an Apache Beam pipeline.

The same files as the local runner (`i2a_tf/data/prepare.py`), from the same
functions: each scanned file goes through `convert_speech_item` /
`convert_face_item`, each clip through the same compiled front end, the split
and record order come from `audio_layout` / `face_order` over the clips'
metadata (scan position, speaker, class, id, length; never the samples), and
dataset.json from `dataset_json`. What differs is where the full passes run:

* the per-band log-mel mean and variance over the voiced frames of the training
  split, and the class vocabulary with its frequencies, are tf.Transform
  analyzers (`tft.mean`, `tft.var`, `tft.vocabulary`) run by
  `tft_beam.AnalyzeDataset`; their values are read back by transforming one
  probe instance with the resulting transform function;
* only metadata crosses a stage boundary: a clip is decoded once for its
  metadata, again in the step that writes its shard (clips are grouped by
  shard, at most `--records_per_shard` per group) and, for training clips, once
  more where its voiced frames feed the analyzers. Carrying the samples between
  stages instead lost elements on the multi-processing DirectRunner at 20,000
  clips (a 767 MB stage output; see BUILD.md) and held them all in memory on
  the in-process one; decoding is cheap next to that.

Beam options come from `--beam_pipeline_args` (DirectRunner in process by
default; Flink, Spark or Dataflow with theirs). Every worker must see the corpus
and `<workdir>/data` at the same paths (a shared file system).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import tempfile
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from i2a_tf.config import Config, ConfigError
from i2a_tf.data import corpora, prepare
from i2a_tf.data.dataset_info import AUDIO_SPLITS, DATASET_JSON, FACE_SPLIT, SKIPPED_JSON
from i2a_tf.data.frontend import BandStatistics, statistics_from_moments
from i2a_tf.data.label_map import LabelMap

log = logging.getLogger(__name__)

# The analyzers' input: one instance per training clip.
VOICED_LOGMEL = "voiced_logmel"  # the clip's voiced frames, [frames * mels] float32
CLASS_NAME = "class_name"  # its canonical class name
_ANALYZER_FEATURES = {
    VOICED_LOGMEL: tf.io.VarLenFeature(tf.float32),
    CLASS_NAME: tf.io.FixedLenFeature([], tf.string),
}
CLASS_VOCABULARY = "classes"
_TRAIN_SPLITS = ("train_labeled", "train_unlabeled")
_RESULT_JSON = "result.json"


class _Failure(NamedTuple):
    """A configuration error found inside the pipeline (e.g. --test_speakers
    naming a speaker the corpus lacks), carried to the driver to raise there."""

    message: str


class _Placement(NamedTuple):
    """Scan position -> (split or FACE_SPLIT, index), and each split's shard names."""

    index_of: dict[int, tuple[str, int]]
    shards: dict[str, list[str]]  # record-file prefix -> names

    def shard_of(self, prefix: str, index: int, per_shard: int) -> str:
        return self.shards[prefix][index // per_shard]


def preprocessing_fn(inputs: dict, num_mels: int) -> dict:
    """The tf.Transform analyzers; outputs repeat their values once per instance.

    inputs: VOICED_LOGMEL SparseTensor [batch, frames * mels] float32, CLASS_NAME
    [batch] string. Outputs: band_mean, band_var [batch, mels] float32 (moments
    over every voiced frame, population variance), class_vocabulary [batch]
    string (the vocabulary file: 'count name' per line, most frequent first).
    """
    frames = tf.reshape(inputs[VOICED_LOGMEL].values, [-1, num_mels])
    mean = tft.mean(frames, reduce_instance_dims=False)
    variance = tft.var(frames, reduce_instance_dims=False)
    vocabulary = tft.vocabulary(inputs[CLASS_NAME], store_frequency=True,
                                vocab_filename=CLASS_VOCABULARY)
    batch = tf.shape(inputs[CLASS_NAME])[0]
    return {"band_mean": tf.tile(mean[tf.newaxis], [batch, 1]),
            "band_var": tf.tile(variance[tf.newaxis], [batch, 1]),
            "class_vocabulary": tf.fill([batch], tf.io.read_file(vocabulary))}


def _analyzer_metadata() -> dataset_metadata.DatasetMetadata:
    return dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(_ANALYZER_FEATURES))


def _convert(scanned: tuple, convert, label_map: LabelMap, config: Config):
    """(scan position, item) -> `convert`'s Clip / Face or Skipped."""
    position, item = scanned
    return convert(position, item, label_map, config)


def _kept_or_skipped(result, num_partitions: int) -> int:
    del num_partitions
    return 1 if isinstance(result, prepare.Skipped) else 0


class _Decoder:
    """Decodes clips again where their samples are needed (a worker-local
    front end, compiled once per DoFn instance)."""

    def __init__(self, config: Config):
        self._config = config
        self._label_map = LabelMap(config.data.classes, config.data.label_map)
        self._compute = None

    def clips(self, entries) -> list[prepare.Clip]:
        """(scan position, item) pairs -> their clips; a file that no longer
        decodes to a clip (changed during prepare) is an error."""
        clips = []
        for position, item in entries:
            clip = prepare.convert_speech_item(position, item, self._label_map,
                                               self._config)
            if isinstance(clip, prepare.Skipped):
                raise prepare.PrepareError(
                    f"{item.path} changed while prepare ran: first decoded, now "
                    f"{clip.reason}")
            clips.append(clip)
        return clips

    def logmels(self, clips: list[prepare.Clip]):
        if self._compute is None:
            self._compute = prepare.frontend_fn(self._config)
        return prepare.logmels(clips, self._compute)


class _WriteAudioShardFn(beam.DoFn):
    """((split, shard), [(index, position, item)]) -> the shard's audio (and
    log-mel) record files, records in index order; yields the file names."""

    def __init__(self, config: Config, root: str):
        self._config, self._root = config, root

    def setup(self):
        self._decoder = _Decoder(self._config)

    def process(self, group, placement):
        (split, shard), members = group
        members = sorted(members, key=lambda member: member[0])
        clips = self._decoder.clips([(position, item) for _, position, item in members])
        indices = [index for index, _, _ in members]
        data_dir = self._config.data_dir
        name = placement.shards[f"audio-{split}"][shard]
        with tf.io.TFRecordWriter(os.path.join(data_dir, name)) as writer:
            for index, clip in zip(indices, clips):
                writer.write(prepare.audio_record(clip, split, index, self._config,
                                                  self._root))
        yield name
        if self._config.data.precompute_logmel:
            name = placement.shards[f"logmel-{split}"][shard]
            with tf.io.TFRecordWriter(os.path.join(data_dir, name)) as writer:
                for index, clip, (logmel, _, _) in zip(
                        indices, clips, self._decoder.logmels(clips)):
                    writer.write(prepare.logmel_record(clip, logmel, split, index,
                                                       self._root))
            yield name


class _AnalyzerInstancesFn(beam.DoFn):
    """Batches of training (position, item) -> the analyzers' instances."""

    def __init__(self, config: Config):
        self._config = config

    def setup(self):
        self._decoder = _Decoder(self._config)

    def process(self, batch):
        classes = self._config.data.classes
        clips = self._decoder.clips(batch)
        for clip, (logmel, start, end) in zip(clips, self._decoder.logmels(clips)):
            voiced = np.ascontiguousarray(logmel[start:end + 1], np.float32)
            yield {VOICED_LOGMEL: voiced.reshape(-1),
                   CLASS_NAME: classes[clip.class_id].encode("utf-8")}


def _clip_entry(clip: prepare.Clip) -> tuple[prepare.ClipMeta, corpora.SpeechItem]:
    """What travels on from the first decode: metadata and the file, no samples."""
    return prepare.clip_meta(clip), clip.item


def _audio_shard_member(entry, placement: _Placement, per_shard: int):
    """-> ((split, shard number), (index, position, item)); nothing when the
    layout failed."""
    meta, item = entry
    if meta.position in placement.index_of:
        split, index = placement.index_of[meta.position]
        yield (split, index // per_shard), (index, meta.position, item)


def _training_entry(entry, placement: _Placement):
    meta, item = entry
    where = placement.index_of.get(meta.position)
    if where is not None and where[0] in _TRAIN_SPLITS:
        yield meta.position, item


def _write_face_shard(group: tuple, data_dir: str) -> str:
    """(file name, [(index, record)]) -> the shard file, records in index order."""
    name, records = group
    with tf.io.TFRecordWriter(os.path.join(data_dir, name)) as writer:
        for _, record in sorted(records, key=lambda pair: pair[0]):
            writer.write(record)
    return name


def _audio_layout(metas: list, config: Config):
    """The layout, None when no clip is usable, or a `_Failure`."""
    if not metas:
        return None
    try:
        return prepare.audio_layout(metas, config.data)
    except ConfigError as error:
        return _Failure(str(error))


def _placement(_, layout, faces_in_order, config: Config) -> _Placement:
    index_of, shards = {}, {}
    per_shard = config.data.records_per_shard
    if isinstance(layout, prepare.AudioLayout):
        index_of.update(layout.placement())
        for split in AUDIO_SPLITS:
            info = prepare.audio_split_info(split, layout.ordered[split], config)
            shards[f"audio-{split}"] = info["audio_files"]
            shards[f"logmel-{split}"] = info.get("logmel_files", [])
    # Faces have their own scan positions: keyed apart from the clips'.
    index_of.update({(FACE_SPLIT, m.position): (FACE_SPLIT, i)
                     for i, m in enumerate(faces_in_order)})
    shards[FACE_SPLIT] = prepare.shard_names(FACE_SPLIT, len(faces_in_order), per_shard)
    return _Placement(index_of, shards)


def _face_records(face: prepare.Face, placement: _Placement, config: Config, root: str):
    _, index = placement.index_of[(FACE_SPLIT, face.position)]
    yield (placement.shard_of(FACE_SPLIT, index, config.data.records_per_shard),
           (index, prepare.face_record(face, root)))


def _statistics(probe: dict) -> tuple[BandStatistics, dict[str, int]]:
    """The transformed probe -> (band statistics, class name -> training clips)."""
    vocabulary = {}
    for line in probe["class_vocabulary"].decode("utf-8").splitlines():
        count, name = line.split(" ", 1)
        vocabulary[name] = int(count)
    return (statistics_from_moments(probe["band_mean"], probe["band_var"]),
            vocabulary)


def _vocabulary_error(vocabulary: dict[str, int], layout: prepare.AudioLayout,
                      config: Config) -> str | None:
    """The analyzers' class vocabulary must be the training split's classes."""
    expected = {}
    for split in _TRAIN_SPLITS:
        for meta in layout.ordered[split]:
            name = config.data.classes[meta.class_id]
            expected[name] = expected.get(name, 0) + 1
    if vocabulary != expected:
        return (f"tf.Transform's class vocabulary {vocabulary} differs from the "
                f"training split's class counts {expected}")
    return None


def _outcome_error(layout, statistics, num_faces: int, speech_skipped, face_skipped,
                   config: Config, roots: tuple[str, str]) -> dict[str, str] | None:
    """Why no dataset.json can be written, as {"prepare_error" or "config_error":
    message}, or None."""
    num_clips = (sum(len(m) for m in layout.ordered.values())
                 if isinstance(layout, prepare.AudioLayout) else 0)
    error = prepare.unusable_error(config, roots, num_clips, num_faces,
                                   len(speech_skipped), len(face_skipped))
    if error:
        return {"prepare_error": error}
    if isinstance(layout, _Failure):
        return {"config_error": layout.message}
    error = _vocabulary_error(statistics[1], layout, config)
    return {"prepare_error": error} if error else None


def _finish(_, layout, statistics, faces_in_order, speech_skipped, face_skipped,
            written, config: Config, roots: tuple[str, str], result_path: str) -> None:
    """Writes skipped.json, then (if the data is usable) the empty shards of
    empty splits and dataset.json; last the driver's result file."""
    data_dir = config.data_dir
    skipped = prepare.skipped_entries(speech_skipped, face_skipped)
    prepare.write_json(os.path.join(data_dir, SKIPPED_JSON), skipped)
    error = _outcome_error(layout, statistics, len(faces_in_order), speech_skipped,
                           face_skipped, config, roots)
    if error:
        prepare.write_json(result_path, error)
        return
    dataset = prepare.dataset_json(config, roots, statistics[0], layout,
                                   faces_in_order, speech_skipped, face_skipped)
    expected = [name for split in AUDIO_SPLITS
                for key in ("audio_files", "logmel_files")
                for name in dataset["splits"][split].get(key, [])]
    expected += dataset["splits"][FACE_SPLIT]["face_files"]
    for name in sorted(set(expected) - set(written)):
        # A split without clips still gets its (empty) shard.
        tf.io.TFRecordWriter(os.path.join(data_dir, name)).close()
    prepare.write_json(os.path.join(data_dir, DATASET_JSON), dataset)
    prepare.write_json(result_path, {"skipped": len(skipped)})


def build_pipeline(pipeline: beam.Pipeline, config: Config, roots: tuple[str, str],
                   speech_scan: corpora.Scan, face_scan: corpora.Scan,
                   result_path: str) -> None:
    """Adds prepare's transforms to `pipeline`; running it writes `<workdir>/data`
    and a one-line `result_path` for the driver."""
    data = config.data
    label_map = LabelMap(data.classes, data.label_map)

    clips, speech_skipped = (
        pipeline
        | "ListSpeech" >> beam.Create(list(enumerate(speech_scan.items)))
        | "DecodeSpeech" >> beam.Map(_convert, prepare.convert_speech_item,
                                          label_map, config)
        | "SpeechKeptOrSkipped" >> beam.Partition(_kept_or_skipped, 2))
    faces, face_skipped = (
        pipeline
        | "ListFaces" >> beam.Create(list(enumerate(face_scan.items)))
        | "DecodeFaces" >> beam.Map(_convert, prepare.convert_face_item,
                                         label_map, config)
        | "FacesKeptOrSkipped" >> beam.Partition(_kept_or_skipped, 2))
    # Scan-level skips (names, extensions) join the decoding ones.
    speech_skipped = (
        (speech_skipped, pipeline | "ScanSkippedSpeech" >> beam.Create(
            [prepare.Skipped(**s) for s in speech_scan.skipped]))
        | "AllSkippedSpeech" >> beam.Flatten())
    face_skipped = (
        (face_skipped, pipeline | "ScanSkippedFaces" >> beam.Create(
            [prepare.Skipped(**s) for s in face_scan.skipped]))
        | "AllSkippedFaces" >> beam.Flatten())

    entries = clips | "ClipEntries" >> beam.Map(_clip_entry)
    layout = beam.pvalue.AsSingleton(
        entries
        | "ClipMeta" >> beam.Map(lambda entry: entry[0])
        | "AllClipMeta" >> beam.combiners.ToList()
        | "Layout" >> beam.Map(_audio_layout, config))
    faces_in_order = beam.pvalue.AsSingleton(
        faces
        | "FaceMeta" >> beam.Map(prepare.face_meta)
        | "AllFaceMeta" >> beam.combiners.ToList()
        | "FaceOrder" >> beam.Map(prepare.face_order, data))
    placement = beam.pvalue.AsSingleton(
        pipeline
        | "PlacementSeed" >> beam.Create([None])
        | "Placement" >> beam.Map(_placement, layout, faces_in_order, config))

    audio_files = (
        entries
        | "AudioShardMembers" >> beam.FlatMap(_audio_shard_member, placement,
                                              data.records_per_shard)
        | "ByAudioShard" >> beam.GroupByKey()
        | "WriteAudioShards" >> beam.ParDo(_WriteAudioShardFn(config, roots[0]),
                                           placement))
    face_files = (
        faces
        | "FaceRecords" >> beam.FlatMap(_face_records, placement, config, roots[1])
        | "ByFaceShard" >> beam.GroupByKey()
        | "WriteFaceShards" >> beam.Map(_write_face_shard, config.data_dir))
    written = (audio_files, face_files) | "AllShards" >> beam.Flatten()

    instances = (
        entries
        | "TrainingClips" >> beam.FlatMap(_training_entry, placement)
        | "BatchTrainingClips" >> beam.BatchElements(min_batch_size=1,
                                                     max_batch_size=32)
        | "AnalyzerInstances" >> beam.ParDo(_AnalyzerInstancesFn(config)))
    metadata = _analyzer_metadata()
    transform_fn = (instances, metadata) | "Analyze" >> tft_beam.AnalyzeDataset(
        lambda inputs: preprocessing_fn(inputs, config.frontend.num_mels))
    probe = pipeline | "Probe" >> beam.Create(
        [{VOICED_LOGMEL: np.zeros(0, np.float32), CLASS_NAME: b""}])
    transformed, _ = ((probe, metadata), transform_fn) | "ReadAnalyzers" >> (
        tft_beam.TransformDataset())
    statistics = transformed | "Statistics" >> beam.Map(_statistics)

    _ = (pipeline
         | "FinishSeed" >> beam.Create([None])
         | "Finish" >> beam.Map(
             _finish, layout, beam.pvalue.AsSingleton(statistics), faces_in_order,
             beam.pvalue.AsList(speech_skipped), beam.pvalue.AsList(face_skipped),
             beam.pvalue.AsList(written), config=config, roots=roots,
             result_path=result_path))


def pipeline_options(config: Config) -> PipelineOptions:
    """--beam_pipeline_args as Beam options (no arguments: the in-process
    DirectRunner); an option Beam does not know is an error, not a warning."""
    args = config.data.beam_pipeline_args
    options = PipelineOptions(shlex.split(args))
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                     - set(options.get_all_options()))
    if unknown:
        raise ConfigError(
            f"--beam_pipeline_args={args}: Beam has no option "
            f"{', '.join('--' + name for name in unknown)}")
    return options


def prepare_with_beam(config: Config) -> dict:
    """Runs prepare as a Beam pipeline; returns the dataset.json contents.

    Raises PrepareError (no usable clip or face; skipped.json says why) or
    ConfigError (a split flag that does not fit the corpus), as the local runner.
    """
    data = config.data
    data_dir = config.data_dir
    options = pipeline_options(config)
    os.makedirs(data_dir, exist_ok=True)
    roots = prepare.synthetic_roots(config)
    speech_scan = corpora.scan_speech(data.speech_corpus, roots[0])
    face_scan = corpora.scan_faces(data.face_corpus, roots[1])
    log.info("found %d speech files (%d not usable by name), %d face images "
             "(%d not usable by name); running the Beam pipeline (%s)",
             len(speech_scan.items), len(speech_scan.skipped), len(face_scan.items),
             len(face_scan.skipped), data.beam_pipeline_args or "DirectRunner")
    prepare.remove_old_records(data_dir)
    temp_dir = tempfile.mkdtemp(prefix=".beam-", dir=data_dir)
    result_path = os.path.join(temp_dir, _RESULT_JSON)
    try:
        with beam.Pipeline(options=options) as pipeline:
            with tft_beam.Context(temp_dir=os.path.join(temp_dir, "tft"),
                                  force_tf_compat_v1=False):
                build_pipeline(pipeline, config, roots, speech_scan, face_scan,
                               result_path)
        with open(result_path, encoding="utf-8") as handle:
            result = json.load(handle)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    with open(os.path.join(data_dir, SKIPPED_JSON), encoding="utf-8") as handle:
        prepare.log_skipped(json.load(handle), data_dir)
    if "config_error" in result:
        raise ConfigError(result["config_error"])
    if "prepare_error" in result:
        raise prepare.PrepareError(result["prepare_error"])
    with open(os.path.join(data_dir, DATASET_JSON), encoding="utf-8") as handle:
        dataset = json.load(handle)
    prepare.log_prepared(dataset, data_dir)
    return dataset
