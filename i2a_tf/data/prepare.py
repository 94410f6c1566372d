"""`--mode=prepare`: corpora on disk -> sharded TFRecords + dataset.json + skipped.json.

Steps: (generate the synthetic corpus if asked) -> scan each corpus's naming
convention -> map labels to the canonical classes -> decode (soundfile, mono,
16 kHz / grayscale, fixed size) -> speaker-independent split and stratified
labeled subset -> per-band log-mel statistics over the training audio (labeled +
unlabeled) -> shuffled, sharded records per split.

Nothing is lost: every input file is written or listed in `skipped.json` with its
reason; only when no usable file is left does prepare fail. The same inputs and
seed give byte-identical records.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import logging
import os
import shutil
from typing import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from i2a_tf.config import Config, DataConfig
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
class _Clip:
    item: corpora.SpeechItem
    class_id: int
    waveform: np.ndarray  # [samples] int16


@dataclasses.dataclass
class _Face:
    item: corpora.FaceItem
    class_id: int
    image: np.ndarray  # [size, size] uint8


class _Progress:
    """Periodic counts on long conversions."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done = what, total, 0

    def step(self) -> None:
        self.done += 1
        if self.done % _PROGRESS_EVERY == 0 or self.done == self.total:
            log.info("%s: %d/%d", self.what, self.done, self.total)


def _synthetic_roots(config: Config) -> tuple[str, str]:
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


def _apply_label_map(items: Iterable, label_map: LabelMap, source_of,
                     skipped: list, dropped: collections.Counter) -> list:
    kept = []
    for item in items:
        class_id = label_map.class_id(item.label)
        if class_id is None:
            dropped[item.label] += 1
            skipped.append({"path": source_of(item), "reason":
                            f"unknown label: '{item.label}' is not in the label map"})
        else:
            kept.append((item, class_id))
    return kept


def _decode_speech(labeled_items, config: Config, skipped: list) -> list[_Clip]:
    rate = config.frontend.sample_rate
    min_samples = int(config.data.min_duration_s * rate)
    clips, progress = [], _Progress("decoding speech", len(labeled_items))
    for item, class_id in labeled_items:
        progress.step()
        try:
            waveform = read_waveform(item.path, rate)
        except AudioReadError as error:
            skipped.append({"path": item.path, "reason": error.reason})
            continue
        if waveform.shape[0] < max(min_samples, config.frontend.frame_length):
            skipped.append({"path": item.path, "reason":
                            f"too short: {waveform.shape[0] / rate:.3f} s < "
                            f"{config.data.min_duration_s} s"})
            continue
        if not np.any(waveform):
            skipped.append({"path": item.path, "reason": "silent: all samples are zero"})
            continue
        clips.append(_Clip(item, class_id, waveform))
    return clips


def _decode_faces(labeled_items, config: Config, skipped: list) -> list[_Face]:
    size = config.data.face_size
    faces, progress = [], _Progress("decoding faces", len(labeled_items))
    for item, class_id in labeled_items:
        progress.step()
        try:
            if item.pixels is not None:
                image = face_from_pixels(item.pixels, item.source, size)
            else:
                image = read_face_image(item.source, size)
        except ImageReadError as error:
            skipped.append({"path": item.source, "reason": error.reason})
            continue
        faces.append(_Face(item, class_id, image))
    return faces


def _frontend_fn(config: Config):
    frontend = config.frontend

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None], tf.int32)])
    def compute(waveforms, num_samples):
        logmel = log_mel(waveforms, frontend)
        num_frames = num_frames_for(num_samples, frontend)
        start, end = voiced_bounds(logmel, num_frames, frontend.trim_db)
        return logmel, num_frames, start, end

    return compute


def _logmels(clips: Sequence[_Clip], compute) -> Iterator[tuple[np.ndarray, int, int]]:
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


def _band_statistics(train_clips: Sequence[_Clip], compute, num_mels: int) -> BandStatistics:
    accumulator = StatisticsAccumulator(num_mels)
    for logmel, start, end in _logmels(train_clips, compute):
        accumulator.add(logmel[np.newaxis], np.array([start]), np.array([end]))
    return accumulator.result()


def _shard_paths(data_dir: str, prefix: str, count: int, per_shard: int) -> list[str]:
    shards = max(1, -(-count // per_shard))
    return [os.path.join(data_dir, f"{prefix}-{i:05d}-of-{shards:05d}.tfrecord")
            for i in range(shards)]


def _write_sharded(paths: Sequence[str], records: Iterable[bytes], per_shard: int) -> int:
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


def _remove_old_records(data_dir: str) -> None:
    for path in glob.glob(os.path.join(data_dir, "*.tfrecord")):
        os.remove(path)


def _relative_to(root: str, source: str) -> str:
    """The source path relative to its corpus root, so records do not depend on
    where the corpus lives (FER2013 CSV rows keep their ':row' suffix)."""
    base = root if os.path.isdir(root) else os.path.dirname(root)
    return os.path.relpath(source, base).replace(os.sep, "/")


def _seeded_order(count: int, seed: int, stream: int) -> np.ndarray:
    return np.random.default_rng([seed, 100 + stream]).permutation(count)


def _write_audio_split(split: str, clips: Sequence[_Clip], hidden: bool,
                       config: Config, compute, data_dir: str, stream: int,
                       root: str) -> dict:
    data = config.data
    order = _seeded_order(len(clips), data.seed, stream)
    ordered = [clips[i] for i in order]

    def meta(index: int, clip: _Clip) -> dict:
        return dict(label=schema.HIDDEN_LABEL if hidden else clip.class_id,
                    true_label=clip.class_id, speaker=clip.item.speaker,
                    utterance_id=clip.item.utterance_id, index=index,
                    source_path=_relative_to(root, clip.item.path))

    audio_paths = _shard_paths(data_dir, f"audio-{split}", len(ordered),
                               data.records_per_shard)
    _write_sharded(audio_paths, (
        schema.audio_example(clip.waveform, config.frontend.sample_rate,
                             **meta(i, clip)) for i, clip in enumerate(ordered)),
        data.records_per_shard)
    info = {
        "audio_files": [os.path.basename(p) for p in audio_paths],
        "num_examples": len(ordered),
        "labels_hidden": hidden,
        "counts_per_class": {name: sum(c.class_id == i for c in ordered)
                             for i, name in enumerate(data.classes)},
        "speakers": sorted({c.item.speaker for c in ordered}),
        "seconds": round(sum(c.waveform.shape[0] for c in ordered)
                         / config.frontend.sample_rate, 3),
    }
    if data.precompute_logmel:
        logmel_paths = _shard_paths(data_dir, f"logmel-{split}", len(ordered),
                                    data.records_per_shard)
        _write_sharded(logmel_paths, (
            schema.logmel_example(logmel, **meta(i, clip))
            for i, (clip, (logmel, _, _)) in enumerate(
                zip(ordered, _logmels(ordered, compute)))),
            data.records_per_shard)
        info["logmel_files"] = [os.path.basename(p) for p in logmel_paths]
    return info


def _write_faces(faces: Sequence[_Face], config: Config, data_dir: str,
                 root: str) -> dict:
    data = config.data
    order = _seeded_order(len(faces), data.seed, len(AUDIO_SPLITS))
    ordered = [faces[i] for i in order]
    paths = _shard_paths(data_dir, FACE_SPLIT, len(ordered),
                         data.records_per_shard)
    _write_sharded(paths, (
        schema.face_example(face.image, label=face.class_id, subject=face.item.subject,
                            source_path=_relative_to(root, face.item.source))
        for face in ordered),
        data.records_per_shard)
    return {
        "face_files": [os.path.basename(p) for p in paths],
        "num_examples": len(ordered),
        "counts_per_class": {name: sum(f.class_id == i for f in ordered)
                             for i, name in enumerate(data.classes)},
        "subjects": sorted({f.item.subject for f in ordered if f.item.subject}),
        "image_size": data.face_size,
    }


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _skip_counts(skipped: Sequence[dict]) -> dict[str, int]:
    # Reasons carry details ("too short: 0.120 s ..."); count by their kind.
    return dict(sorted(collections.Counter(
        entry["reason"].split(":")[0] for entry in skipped).items()))


def prepare(config: Config) -> dict:
    """Converts the configured corpora; returns the dataset.json contents.

    Raises PrepareError when no usable speech clip or face image is left, after
    writing skipped.json so the reasons can be read.
    """
    data: DataConfig = config.data
    data_dir = config.data_dir
    os.makedirs(data_dir, exist_ok=True)
    label_map = LabelMap(data.classes, data.label_map)
    speech_root, face_root = _synthetic_roots(config)

    speech_scan = corpora.scan_speech(data.speech_corpus, speech_root)
    face_scan = corpora.scan_faces(data.face_corpus, face_root)
    speech_skipped, face_skipped = list(speech_scan.skipped), list(face_scan.skipped)
    dropped_speech, dropped_faces = collections.Counter(), collections.Counter()
    log.info("found %d speech files (%d not usable by name), %d face images "
             "(%d not usable by name)", len(speech_scan.items), len(speech_skipped),
             len(face_scan.items), len(face_skipped))
    clips = _decode_speech(
        _apply_label_map(speech_scan.items, label_map, lambda i: i.path,
                         speech_skipped, dropped_speech), config, speech_skipped)
    faces = _decode_faces(
        _apply_label_map(face_scan.items, label_map, lambda i: i.source,
                         face_skipped, dropped_faces), config, face_skipped)
    skipped = sorted([{"corpus": "speech", **s} for s in speech_skipped]
                     + [{"corpus": "faces", **s} for s in face_skipped],
                     key=lambda s: (s["corpus"], s["path"]))
    _write_json(os.path.join(data_dir, SKIPPED_JSON), skipped)
    if skipped:
        log.warning("skipped %d file(s), listed with reasons in %s: %s", len(skipped),
                    os.path.join(data_dir, SKIPPED_JSON), _skip_counts(skipped))
    if not clips:
        raise PrepareError(
            f"no usable speech clip in {speech_root} (--speech_corpus="
            f"{data.speech_corpus}): {len(speech_skipped)} file(s) skipped, see "
            f"{os.path.join(data_dir, SKIPPED_JSON)}")
    if not faces:
        raise PrepareError(
            f"no usable face image in {face_root} (--face_corpus={data.face_corpus}): "
            f"{len(face_skipped)} file(s) skipped, see "
            f"{os.path.join(data_dir, SKIPPED_JSON)}")

    speaker_split = splits.split_speakers([c.item.speaker for c in clips], data)
    train = [c for c in clips if c.item.speaker in speaker_split.train]
    labeled_mask = splits.choose_labeled([c.class_id for c in train],
                                         [c.item.utterance_id for c in train],
                                         data.label_fraction, data.seed)
    by_split = {
        "train_labeled": [c for c, m in zip(train, labeled_mask) if m],
        "train_unlabeled": [c for c, m in zip(train, labeled_mask) if not m],
        "val": [c for c in clips if c.item.speaker in speaker_split.val],
        "test": [c for c in clips if c.item.speaker in speaker_split.test],
    }
    compute = _frontend_fn(config)
    log.info("computing log-mel band statistics over %d training clips", len(train))
    statistics = _band_statistics(train, compute, config.frontend.num_mels)

    _remove_old_records(data_dir)
    split_info = {}
    for stream, split in enumerate(AUDIO_SPLITS):
        log.info("writing %s: %d clips", split, len(by_split[split]))
        split_info[split] = _write_audio_split(
            split, by_split[split], split == "train_unlabeled", config, compute,
            data_dir, stream, speech_root)
    log.info("writing faces: %d images", len(faces))
    split_info[FACE_SPLIT] = _write_faces(faces, config, data_dir, face_root)

    dataset = {
        "converter_version": CONVERTER_VERSION,
        "classes": list(data.classes),
        "speech_corpus": data.speech_corpus,
        "face_corpus": data.face_corpus,
        "speech_source": os.path.abspath(speech_root),
        "face_source": os.path.abspath(face_root),
        "seed": data.seed,
        "label_fraction": data.label_fraction,
        "sample_rate": config.frontend.sample_rate,
        "frontend": dataclasses.asdict(config.frontend),
        "normalisation": {"mean": [float(v) for v in statistics.mean],
                          "std": [float(v) for v in statistics.std],
                          "computed_over": ["train_labeled", "train_unlabeled"],
                          "frames": "voiced (silence-trimmed) frames"},
        "speakers": {"train": list(speaker_split.train), "val": list(speaker_split.val),
                     "test": list(speaker_split.test)},
        "splits": split_info,
        "precomputed_logmel": data.precompute_logmel,
        "dropped_labels": {"speech": dict(sorted(dropped_speech.items())),
                           "faces": dict(sorted(dropped_faces.items()))},
        "skipped": {"speech": len(speech_skipped), "faces": len(face_skipped),
                    "by_reason": _skip_counts(skipped)},
    }
    _write_json(os.path.join(data_dir, DATASET_JSON), dataset)
    log.info("prepared %s: %s clips, %d faces; %d file(s) skipped (see %s)", data_dir,
             ", ".join(f"{split} {split_info[split]['num_examples']}"
                       for split in AUDIO_SPLITS),
             split_info[FACE_SPLIT]["num_examples"], len(skipped), SKIPPED_JSON)
    return dataset
