"""`--mode=prepare`: corpora on disk -> sharded TFRecords + dataset.json + skipped.json.

Steps: (generate the synthetic corpus if asked) -> scan each corpus's naming
convention -> map labels to the canonical classes -> decode (soundfile, mono,
16 kHz / grayscale, fixed size) -> speaker-independent split and stratified
labeled subset -> per-band log-mel statistics over the training audio (labeled +
unlabeled) -> shuffled, sharded records per split.

Nothing is lost: every input file is written or listed in `skipped.json` with its
reason; only when no usable file is left does prepare fail. The same inputs and
seed give byte-identical records.

Two runners produce the same files (`--prepare_runner`): this module's in-process
loop, and an Apache Beam pipeline with tf.Transform analyzers
(`i2a_tf/data/prepare_beam.py`, `pip install '.[beam]'`). Both call the functions
here for what each clip becomes (`convert_speech_item`, `convert_face_item`,
`audio_record`, ...), for where it goes (`audio_layout`, `face_order`) and for
what dataset.json says (`audio_split_info`, `dataset_json`): one definition of
the per-clip transform and the split.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import logging
import os
import shutil
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from i2a_tf.config import Config, ConfigError, DataConfig
from i2a_tf.data import corpora, schema, splits
from i2a_tf.data.dataset_info import (AUDIO_SPLITS, CONVERTER_VERSION, DATASET_JSON,
                                      FACE_SPLIT, SKIPPED_JSON)
from i2a_tf.data.audio_files import AudioReadError, read_waveform
from i2a_tf.data.face_images import ImageReadError, face_from_pixels, read_face_image
from i2a_tf.data.frontend import (BandStatistics, StatisticsAccumulator, log_mel,
                                  num_frames_for, voiced_bounds)
from i2a_tf.data.label_map import LabelMap

_PROGRESS_EVERY = 200
_FRONTEND_BATCH = 32

log = logging.getLogger(__name__)


class PrepareError(RuntimeError):
    """Prepare cannot produce a usable dataset; the message says why."""


@dataclasses.dataclass
class Clip:
    """A decoded speech clip; `position` is its place in the corpus scan."""

    position: int
    item: corpora.SpeechItem
    class_id: int
    waveform: np.ndarray  # [samples] int16


@dataclasses.dataclass
class Face:
    """A decoded face image; `position` is its place in the corpus scan."""

    position: int
    item: corpora.FaceItem
    class_id: int
    image: np.ndarray  # [size, size] uint8


class Skipped(NamedTuple):
    """An input file that is not used: its path, why, and the corpus label when
    the label map dropped it (counted in dataset.json's `dropped_labels`)."""

    path: str
    reason: str
    dropped_label: str | None = None

    def entry(self, corpus: str) -> dict[str, str]:
        return {"corpus": corpus, "path": self.path, "reason": self.reason}


class ClipMeta(NamedTuple):
    """What the split and dataset.json need of a clip (not its samples)."""

    position: int
    speaker: str
    class_id: int
    utterance_id: str
    num_samples: int


class FaceMeta(NamedTuple):
    position: int
    class_id: int
    subject: str


@dataclasses.dataclass(frozen=True)
class AudioLayout:
    """Where every clip goes: its split and its index (record order) there."""

    speakers: splits.SpeakerSplit
    ordered: dict[str, tuple[ClipMeta, ...]]  # split -> clips in record order

    def placement(self) -> dict[int, tuple[str, int]]:
        """Scan position -> (split, index in the split)."""
        return {meta.position: (split, index)
                for split, metas in self.ordered.items()
                for index, meta in enumerate(metas)}


class _Progress:
    """Periodic counts on long conversions."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done = what, total, 0

    def step(self) -> None:
        self.done += 1
        if self.done % _PROGRESS_EVERY == 0 or self.done == self.total:
            log.info("%s: %d/%d", self.what, self.done, self.total)


def synthetic_roots(config: Config) -> tuple[str, str]:
    """Generates the synthetic corpora asked for; returns (speech root, face root)."""
    # Imported here: the generator is only needed for the demo corpus.
    from i2a_tf.data import synthetic

    data = config.data
    root = os.path.join(config.workdir, "synthetic")
    speech_root, face_root = os.path.join(root, "speech"), os.path.join(root, "faces")
    # Regenerate from scratch: files of an earlier, larger demo corpus would
    # otherwise be picked up by the converters.
    for generated, corpus in ((speech_root, data.speech_corpus),
                              (face_root, data.face_corpus)):
        if corpus == "synthetic":
            shutil.rmtree(generated, ignore_errors=True)
    if data.speech_corpus == "synthetic":
        log.info("generating the synthetic speech corpus in %s", speech_root)
        synthetic.generate_speech_corpus(
            speech_root, classes=data.classes, num_speakers=data.synthetic_speakers,
            clips_per_speaker_per_class=data.synthetic_clips_per_class,
            duration_s=(1.5, 3.0), sample_rate=config.frontend.sample_rate,
            seed=data.seed)
    if data.face_corpus == "synthetic":
        log.info("generating the synthetic face corpus in %s", face_root)
        synthetic.generate_face_corpus(
            face_root, classes=data.classes, num_subjects=data.synthetic_subjects,
            images_per_subject_per_class=data.synthetic_images_per_class,
            image_size=data.face_size, seed=data.seed)
    return (speech_root if data.speech_corpus == "synthetic" else data.speech_dir,
            face_root if data.face_corpus == "synthetic" else data.face_dir)


def convert_speech_item(position: int, item: corpora.SpeechItem, label_map: LabelMap,
                        config: Config) -> Clip | Skipped:
    """One scanned speech file -> its decoded clip, or why it is skipped."""
    class_id = label_map.class_id(item.label)
    if class_id is None:
        return Skipped(item.path, f"unknown label: '{item.label}' is not in the "
                       "label map", item.label)
    rate = config.frontend.sample_rate
    try:
        waveform = read_waveform(item.path, rate)
    except AudioReadError as error:
        return Skipped(item.path, error.reason)
    min_samples = int(config.data.min_duration_s * rate)
    if waveform.shape[0] < max(min_samples, config.frontend.frame_length):
        return Skipped(item.path, f"too short: {waveform.shape[0] / rate:.3f} s < "
                       f"{config.data.min_duration_s} s")
    if not np.any(waveform):
        return Skipped(item.path, "silent: all samples are zero")
    return Clip(position, item, class_id, waveform)


def convert_face_item(position: int, item: corpora.FaceItem, label_map: LabelMap,
                      config: Config) -> Face | Skipped:
    """One scanned face -> its decoded image, or why it is skipped."""
    class_id = label_map.class_id(item.label)
    if class_id is None:
        return Skipped(item.source, f"unknown label: '{item.label}' is not in the "
                       "label map", item.label)
    size = config.data.face_size
    try:
        if item.pixels is not None:
            image = face_from_pixels(item.pixels, item.source, size)
        else:
            image = read_face_image(item.source, size)
    except ImageReadError as error:
        return Skipped(item.source, error.reason)
    return Face(position, item, class_id, image)


def _convert_all(items: Sequence, convert, what: str, label_map: LabelMap,
                 config: Config) -> tuple[list, list[Skipped]]:
    kept, skipped, progress = [], [], _Progress(what, len(items))
    for position, item in enumerate(items):
        progress.step()
        result = convert(position, item, label_map, config)
        (skipped if isinstance(result, Skipped) else kept).append(result)
    return kept, skipped


def frontend_fn(config: Config):
    """A compiled (waveforms [B, S] float32, num_samples [B] int32) ->
    (log-mel [B, F, mels], num_frames [B], voiced start [B], voiced end [B])."""
    frontend = config.frontend

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None], tf.int32)])
    def compute(waveforms, num_samples):
        logmel = log_mel(waveforms, frontend)
        num_frames = num_frames_for(num_samples, frontend)
        start, end = voiced_bounds(logmel, num_frames, frontend.trim_db)
        return logmel, num_frames, start, end

    return compute


def logmels(clips: Sequence[Clip], compute) -> Iterator[tuple[np.ndarray, int, int]]:
    """Per clip: (unnormalised log-mel [frames, mels] float32, voiced start, end)."""
    for first in range(0, len(clips), _FRONTEND_BATCH):
        batch = clips[first:first + _FRONTEND_BATCH]
        longest = max(clip.waveform.shape[0] for clip in batch)
        waveforms = np.zeros((len(batch), longest), np.float32)
        for row, clip in enumerate(batch):
            waveforms[row, :clip.waveform.shape[0]] = clip.waveform / 32768.0
        num_samples = np.array([clip.waveform.shape[0] for clip in batch], np.int32)
        logmel, num_frames, start, end = (
            t.numpy() for t in compute(tf.constant(waveforms), tf.constant(num_samples)))
        for row in range(len(batch)):
            yield logmel[row, :num_frames[row]], int(start[row]), int(end[row])


def _band_statistics(train_clips: Sequence[Clip], compute, num_mels: int) -> BandStatistics:
    accumulator = StatisticsAccumulator(num_mels)
    for logmel, start, end in logmels(train_clips, compute):
        accumulator.add(logmel[np.newaxis], np.array([start]), np.array([end]))
    return accumulator.result()


def clip_meta(clip: Clip) -> ClipMeta:
    return ClipMeta(clip.position, clip.item.speaker, clip.class_id,
                    clip.item.utterance_id, int(clip.waveform.shape[0]))


def face_meta(face: Face) -> FaceMeta:
    return FaceMeta(face.position, face.class_id, face.item.subject)


def _seeded_order(count: int, seed: int, stream: int) -> np.ndarray:
    return np.random.default_rng([seed, 100 + stream]).permutation(count)


def audio_layout(metas: Iterable[ClipMeta], data: DataConfig) -> AudioLayout:
    """The speaker split, the labeled subset and the record order of every split.

    Depends only on the clips' metadata and the seed: clips are taken in scan
    order, so any runner that knows each clip's scan position gets the same
    layout.
    """
    clips = sorted(metas, key=lambda meta: meta.position)
    speaker_split = splits.split_speakers([c.speaker for c in clips], data)
    train = [c for c in clips if c.speaker in speaker_split.train]
    labeled_mask = splits.choose_labeled([c.class_id for c in train],
                                         [c.utterance_id for c in train],
                                         data.label_fraction, data.seed)
    by_split = {
        "train_labeled": [c for c, m in zip(train, labeled_mask) if m],
        "train_unlabeled": [c for c, m in zip(train, labeled_mask) if not m],
        "val": [c for c in clips if c.speaker in speaker_split.val],
        "test": [c for c in clips if c.speaker in speaker_split.test],
    }
    ordered = {}
    for stream, split in enumerate(AUDIO_SPLITS):
        members = by_split[split]
        ordered[split] = tuple(members[i] for i in
                               _seeded_order(len(members), data.seed, stream))
    return AudioLayout(speaker_split, ordered)


def face_order(metas: Iterable[FaceMeta], data: DataConfig) -> tuple[FaceMeta, ...]:
    """Faces in record order (seeded, from scan order)."""
    faces = sorted(metas, key=lambda meta: meta.position)
    return tuple(faces[i] for i in _seeded_order(len(faces), data.seed,
                                                 len(AUDIO_SPLITS)))


def shard_names(prefix: str, count: int, per_shard: int) -> list[str]:
    """Record file names of a split of `count` records (one empty shard if 0)."""
    shards = max(1, -(-count // per_shard))
    return [f"{prefix}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]


def write_sharded(paths: Sequence[str], records: Iterable[bytes], per_shard: int) -> int:
    written, writer, shard = 0, None, -1
    try:
        for record in records:
            if written % per_shard == 0:
                if writer is not None:
                    writer.close()
                shard += 1
                writer = tf.io.TFRecordWriter(paths[shard])
            writer.write(record)
            written += 1
    finally:
        if writer is not None:
            writer.close()
    for path in paths[shard + 1:]:  # an empty split still gets its (empty) shard
        tf.io.TFRecordWriter(path).close()
    return written


def remove_old_records(data_dir: str) -> None:
    for path in glob.glob(os.path.join(data_dir, "*.tfrecord")):
        os.remove(path)


def _relative_to(root: str, source: str) -> str:
    """The source path relative to its corpus root, so records do not depend on
    where the corpus lives (FER2013 CSV rows keep their ':row' suffix)."""
    base = root if os.path.isdir(root) else os.path.dirname(root)
    return os.path.relpath(source, base).replace(os.sep, "/")


def _audio_meta(clip: Clip, split: str, index: int, root: str) -> dict:
    return dict(label=schema.HIDDEN_LABEL if split == "train_unlabeled" else clip.class_id,
                true_label=clip.class_id, speaker=clip.item.speaker,
                utterance_id=clip.item.utterance_id, index=index,
                source_path=_relative_to(root, clip.item.path))


def audio_record(clip: Clip, split: str, index: int, config: Config, root: str) -> bytes:
    """The serialized audio record of `clip` at `index` of `split`."""
    return schema.audio_example(clip.waveform, config.frontend.sample_rate,
                                **_audio_meta(clip, split, index, root))


def logmel_record(clip: Clip, logmel: np.ndarray, split: str, index: int,
                  root: str) -> bytes:
    """The serialized log-mel record; `logmel`: [frames, mels] float32."""
    return schema.logmel_example(logmel, **_audio_meta(clip, split, index, root))


def face_record(face: Face, root: str) -> bytes:
    return schema.face_example(face.image, label=face.class_id,
                               subject=face.item.subject,
                               source_path=_relative_to(root, face.item.source))


def audio_split_info(split: str, metas: Sequence[ClipMeta], config: Config) -> dict:
    """dataset.json's entry for an audio split, from its clips in record order."""
    data = config.data
    info = {
        "audio_files": shard_names(f"audio-{split}", len(metas), data.records_per_shard),
        "num_examples": len(metas),
        "labels_hidden": split == "train_unlabeled",
        "counts_per_class": {name: sum(m.class_id == i for m in metas)
                             for i, name in enumerate(data.classes)},
        "speakers": sorted({m.speaker for m in metas}),
        "seconds": round(sum(m.num_samples for m in metas)
                         / config.frontend.sample_rate, 3),
    }
    if data.precompute_logmel:
        info["logmel_files"] = shard_names(f"logmel-{split}", len(metas),
                                           data.records_per_shard)
    return info


def face_info(metas: Sequence[FaceMeta], config: Config) -> dict:
    """dataset.json's entry for the faces."""
    data = config.data
    return {
        "face_files": shard_names(FACE_SPLIT, len(metas), data.records_per_shard),
        "num_examples": len(metas),
        "counts_per_class": {name: sum(m.class_id == i for m in metas)
                             for i, name in enumerate(data.classes)},
        "subjects": sorted({m.subject for m in metas if m.subject}),
        "image_size": data.face_size,
    }


def _write_audio_split(split: str, clips_in_order: Sequence[Clip], config: Config,
                       compute, data_dir: str, root: str) -> None:
    data = config.data
    info = audio_split_info(split, [clip_meta(c) for c in clips_in_order], config)
    write_sharded([os.path.join(data_dir, name) for name in info["audio_files"]], (
        audio_record(clip, split, i, config, root)
        for i, clip in enumerate(clips_in_order)), data.records_per_shard)
    if data.precompute_logmel:
        write_sharded([os.path.join(data_dir, name) for name in info["logmel_files"]], (
            logmel_record(clip, logmel, split, i, root)
            for i, (clip, (logmel, _, _)) in enumerate(
                zip(clips_in_order, logmels(clips_in_order, compute)))),
            data.records_per_shard)


def _write_faces(faces_in_order: Sequence[Face], config: Config, data_dir: str,
                 root: str) -> None:
    names = face_info([face_meta(f) for f in faces_in_order], config)["face_files"]
    write_sharded([os.path.join(data_dir, name) for name in names],
                  (face_record(face, root) for face in faces_in_order),
                  config.data.records_per_shard)


def write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _skip_counts(skipped: Sequence[dict]) -> dict[str, int]:
    # Reasons carry details ("too short: 0.120 s ..."); count by their kind.
    return dict(sorted(collections.Counter(
        entry["reason"].split(":")[0] for entry in skipped).items()))


def skipped_entries(speech: Iterable[Skipped], faces: Iterable[Skipped]) -> list[dict]:
    """skipped.json: every unused file with its reason, sorted by corpus and path."""
    return sorted([s.entry("speech") for s in speech] + [s.entry("faces") for s in faces],
                  key=lambda s: (s["corpus"], s["path"]))


def dropped_labels(skipped: Iterable[Skipped]) -> dict[str, int]:
    return dict(sorted(collections.Counter(
        s.dropped_label for s in skipped if s.dropped_label is not None).items()))


def unusable_error(config: Config, roots: tuple[str, str], num_clips: int,
                   num_faces: int, num_speech_skipped: int,
                   num_face_skipped: int) -> str | None:
    """Why no dataset can be written (no usable clip or face), or None."""
    data = config.data
    where = os.path.join(config.data_dir, SKIPPED_JSON)
    if not num_clips:
        return (f"no usable speech clip in {roots[0]} (--speech_corpus="
                f"{data.speech_corpus}): {num_speech_skipped} file(s) skipped, see "
                f"{where}")
    if not num_faces:
        return (f"no usable face image in {roots[1]} (--face_corpus="
                f"{data.face_corpus}): {num_face_skipped} file(s) skipped, see {where}")
    return None


def log_skipped(skipped: Sequence[dict], data_dir: str) -> None:
    if skipped:
        log.warning("skipped %d file(s), listed with reasons in %s: %s", len(skipped),
                    os.path.join(data_dir, SKIPPED_JSON), _skip_counts(skipped))


def dataset_json(config: Config, roots: tuple[str, str], statistics: BandStatistics,
                 layout: AudioLayout, faces_in_order: Sequence[FaceMeta],
                 speech_skipped: Sequence[Skipped],
                 face_skipped: Sequence[Skipped]) -> dict:
    """The contents of dataset.json."""
    data = config.data
    split_info = {split: audio_split_info(split, layout.ordered[split], config)
                  for split in AUDIO_SPLITS}
    split_info[FACE_SPLIT] = face_info(faces_in_order, config)
    speakers = layout.speakers
    return {
        "converter_version": CONVERTER_VERSION,
        "classes": list(data.classes),
        "speech_corpus": data.speech_corpus,
        "face_corpus": data.face_corpus,
        "speech_source": os.path.abspath(roots[0]),
        "face_source": os.path.abspath(roots[1]),
        "seed": data.seed,
        "label_fraction": data.label_fraction,
        "sample_rate": config.frontend.sample_rate,
        "frontend": dataclasses.asdict(config.frontend),
        "normalisation": {"mean": [float(v) for v in statistics.mean],
                          "std": [float(v) for v in statistics.std],
                          "computed_over": ["train_labeled", "train_unlabeled"],
                          "frames": "voiced (silence-trimmed) frames"},
        "speakers": {"train": list(speakers.train), "val": list(speakers.val),
                     "test": list(speakers.test)},
        "splits": split_info,
        "precomputed_logmel": data.precompute_logmel,
        "dropped_labels": {"speech": dropped_labels(speech_skipped),
                           "faces": dropped_labels(face_skipped)},
        "skipped": {"speech": len(speech_skipped), "faces": len(face_skipped),
                    "by_reason": _skip_counts(skipped_entries(speech_skipped,
                                                              face_skipped))},
    }


def log_prepared(dataset: dict, data_dir: str) -> None:
    split_info = dataset["splits"]
    log.info("prepared %s: %s clips, %d faces; %d file(s) skipped (see %s)", data_dir,
             ", ".join(f"{split} {split_info[split]['num_examples']}"
                       for split in AUDIO_SPLITS),
             split_info[FACE_SPLIT]["num_examples"],
             dataset["skipped"]["speech"] + dataset["skipped"]["faces"], SKIPPED_JSON)


def prepare(config: Config) -> dict:
    """Converts the configured corpora with `--prepare_runner`; returns the
    dataset.json contents.

    Raises PrepareError when no usable speech clip or face image is left, after
    writing skipped.json so the reasons can be read.
    """
    if config.data.prepare_runner == "beam":
        try:
            from i2a_tf.data import prepare_beam
        except ImportError as error:
            if error.name and error.name.split(".")[0] in prepare_beam_modules():
                raise ConfigError(
                    f"--prepare_runner=beam: {error.name} is not installed; install "
                    "the Beam extra with pip install '.[beam]' (or use "
                    "--prepare_runner=local)") from error
            raise
        return prepare_beam.prepare_with_beam(config)
    return _prepare_locally(config)


def prepare_beam_modules() -> tuple[str, ...]:
    """Top-level packages the Beam runner needs beyond the core install."""
    return ("apache_beam", "tensorflow_transform", "tfx_bsl", "tensorflow_metadata",
            "pyarrow")


def _prepare_locally(config: Config) -> dict:
    data: DataConfig = config.data
    data_dir = config.data_dir
    os.makedirs(data_dir, exist_ok=True)
    label_map = LabelMap(data.classes, data.label_map)
    roots = synthetic_roots(config)

    speech_scan = corpora.scan_speech(data.speech_corpus, roots[0])
    face_scan = corpora.scan_faces(data.face_corpus, roots[1])
    log.info("found %d speech files (%d not usable by name), %d face images "
             "(%d not usable by name)", len(speech_scan.items), len(speech_scan.skipped),
             len(face_scan.items), len(face_scan.skipped))
    clips, speech_skipped = _convert_all(speech_scan.items, convert_speech_item,
                                         "decoding speech", label_map, config)
    faces, face_skipped = _convert_all(face_scan.items, convert_face_item,
                                       "decoding faces", label_map, config)
    speech_skipped = [Skipped(**s) for s in speech_scan.skipped] + speech_skipped
    face_skipped = [Skipped(**s) for s in face_scan.skipped] + face_skipped
    skipped = skipped_entries(speech_skipped, face_skipped)
    write_json(os.path.join(data_dir, SKIPPED_JSON), skipped)
    log_skipped(skipped, data_dir)
    error = unusable_error(config, roots, len(clips), len(faces), len(speech_skipped),
                           len(face_skipped))
    if error:
        raise PrepareError(error)

    layout = audio_layout([clip_meta(c) for c in clips], data)
    by_position = {clip.position: clip for clip in clips}
    compute = frontend_fn(config)
    # Scan order, as the frontend batches see them: the float64 sums do not depend
    # on the order, their last bit could.
    train = [c for c in clips if c.item.speaker in layout.speakers.train]
    log.info("computing log-mel band statistics over %d training clips", len(train))
    statistics = _band_statistics(train, compute, config.frontend.num_mels)

    remove_old_records(data_dir)
    for split in AUDIO_SPLITS:
        log.info("writing %s: %d clips", split, len(layout.ordered[split]))
        _write_audio_split(split, [by_position[m.position] for m in layout.ordered[split]],
                           config, compute, data_dir, roots[0])
    log.info("writing faces: %d images", len(faces))
    faces_in_order = face_order([face_meta(f) for f in faces], data)
    faces_by_position = {face.position: face for face in faces}
    _write_faces([faces_by_position[m.position] for m in faces_in_order], config,
                 data_dir, roots[1])

    dataset = dataset_json(config, roots, statistics, layout, faces_in_order,
                           speech_skipped, face_skipped)
    write_json(os.path.join(data_dir, DATASET_JSON), dataset)
    log_prepared(dataset, data_dir)
    return dataset
