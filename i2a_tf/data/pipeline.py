"""tf.data readers: TFRecords -> exactly what the training step and evaluation need.

Audio: parse -> decode -> (padded) batch -> front end (log-mel, silence trim,
crop/pad to T frames: random in training, centred in evaluation) -> per-band
normalisation (the training split's statistics, or with `--speaker_normalisation`
each clip's speaker's, `speaker_statistics`) -> optional SpecAugment -> prefetch. The front end runs on whole
batches, so its matmuls and FFTs are vectorised. Faces: batch -> parse -> decode ->
scale to [-1, 1] -> optional random flip.

Randomness (shuffle, crops, masks, flips) is stateless and derived from the
configured seed, the input pipeline id and a batch counter, so with
`deterministic=True` two runs read identical batches.

`train_input_fn(input_context)` zips the face, labeled and unlabeled streams into
one dict with explicit keys, each stream with its own per-replica batch size:

  face_images      [Bf, H, W, 1] float32 in [-1, 1]
  face_labels      [Bf] int32 class id
  labeled_logmel   [Bl, mels, T] float32, log-mel, normalised
  labeled_labels   [Bl] int32 class id
  unlabeled_logmel [Bu, mels, T] float32, log-mel, normalised
  unlabeled_index  [Bu] int32, the clip's `index` in the unlabeled pool
                   (train_unlabeled; with --unlabeled_test_clips then the test split;
                   the test split alone with --nounlabeled_train_clips)
  unlabeled_weak_logmel, unlabeled_strong_logmel
                   [Bu, mels, T] float32, with --use_consistency only: the same
                   crop without masks (weak) and strongly augmented (`strong_augment`)

A stream whose split is empty (e.g. no unlabeled clips at label_fraction=1), or
that the run does not use (faces without translation; unlabeled clips without
translation or pseudo-labels), is left out of the dict.
"""

from __future__ import annotations

import functools
import logging
import os
import zlib
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from i2a_tf.config import Config, FrontEndConfig
from i2a_tf.data import schema
from i2a_tf.data.dataset_info import (AUDIO_SPLITS, DATASET_JSON, FACE_SPLIT,
                                     PREPARED_FRONTEND_FIELDS, DatasetInfo)
from i2a_tf.data.frontend import (BandStatistics, clip_band_moments,
                                  logmel_features, speaker_row_statistics,
                                  statistics_from_moment_sums, waveform_features)

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE

# Distinct stateless-random streams per use.
_CROP, _FREQ_MASK, _TIME_MASK, _FLIP, _STRONG = 1, 2, 3, 4, 5


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return options


def _records(files: list[str], training: bool, seed: int, deterministic: bool,
             input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
    """Serialized records, sharded across input pipelines.

    Shards by file when there are at least as many files as pipelines, else by
    record (small splits have a single file).
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    if num_pipelines > 1 and len(files) < num_pipelines:
        # Record-level sharding needs every pipeline to see the same record
        # order, so the files are read sequentially, not interleaved.
        return tf.data.TFRecordDataset(files).shard(num_pipelines, pipeline_id)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if num_pipelines > 1:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    if training and len(files) > 1:
        dataset = dataset.shuffle(len(files), seed=seed)
    return dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def _seeded_batches(dataset: tf.data.Dataset, seed: int, pipeline_id: int,
                    stream: str) -> tf.data.Dataset:
    """Pairs each batch with a [2] int32 stateless seed unique to the batch.

    The seed mixes the configured seed, the input pipeline and the stream (split
    name), so the labeled and unlabeled streams, stepping together, never draw
    the same crops and masks.
    """
    base = (seed * 1_000_003 + pipeline_id * 1009 + zlib.crc32(stream.encode())) \
        % 2147483647
    counter = tf.data.Dataset.counter(dtype=tf.int64)
    return tf.data.Dataset.zip((dataset, counter)).map(
        lambda batch, step: (batch, tf.stack([
            tf.constant(base, tf.int32), tf.cast(step % 2147483647, tf.int32)])))


def _stream_seed(seed: tf.Tensor, stream: int) -> tf.Tensor:
    return tf.stack([seed[0], seed[1] * 8 + stream])


def spec_augment(logmel: tf.Tensor, seed: tf.Tensor, *, freq_mask_bands: int,
                 time_mask_frames: int, num_freq_masks: int,
                 num_time_masks: int) -> tf.Tensor:
    """SpecAugment masks (Park et al. 2019) set to 0, the band mean.

    logmel: [B, mels, T] float32, normalised. seed: [2] int32 stateless seed.
    Each mask has a width drawn uniformly from [0, max width] and a uniform start.
    """
    def masks(axis_size, max_width, count, stream):
        if count == 0 or max_width == 0:
            return None
        batch = tf.shape(logmel)[0]
        draws = tf.random.stateless_uniform(
            [batch, count, 2], _stream_seed(seed, stream))
        width = tf.cast(tf.floor(draws[..., 0] * (max_width + 1)), tf.int32)
        start = tf.cast(tf.floor(
            draws[..., 1] * tf.cast(axis_size - width + 1, tf.float32)), tf.int32)
        positions = tf.range(axis_size)[tf.newaxis, tf.newaxis, :]
        inside = tf.logical_and(positions >= start[..., tf.newaxis],
                                positions < (start + width)[..., tf.newaxis])
        return tf.reduce_any(inside, axis=1)  # [B, axis_size]

    mels, frames = tf.shape(logmel)[1], tf.shape(logmel)[2]
    keep = tf.ones_like(logmel, tf.bool)
    freq = masks(mels, freq_mask_bands, num_freq_masks, _FREQ_MASK)
    if freq is not None:
        keep = tf.logical_and(keep, tf.logical_not(freq)[:, :, tf.newaxis])
    time = masks(frames, time_mask_frames, num_time_masks, _TIME_MASK)
    if time is not None:
        keep = tf.logical_and(keep, tf.logical_not(time)[:, tf.newaxis, :])
    return tf.where(keep, logmel, tf.zeros_like(logmel))


def strong_augment(logmel: tf.Tensor, seed: tf.Tensor, *, freq_mask_bands: int,
                   time_mask_frames: int, num_freq_masks: int, num_time_masks: int,
                   gain: float) -> tf.Tensor:
    """The strong view of consistency training: SpecAugment with twice the
    masks of twice the width, a per-clip offset in [-gain, gain] (a gain change
    in normalised log-mel units) and a circular time shift of up to half the
    frames.

    logmel: [B, mels, T] float32, normalised (un-augmented crop). seed: [2] int32.
    """
    seed = _stream_seed(seed, _STRONG)
    masked = spec_augment(
        logmel, seed, freq_mask_bands=2 * freq_mask_bands,
        time_mask_frames=2 * time_mask_frames, num_freq_masks=2 * num_freq_masks,
        num_time_masks=2 * num_time_masks)
    batch, frames = tf.shape(logmel)[0], tf.shape(logmel)[2]
    draws = tf.random.stateless_uniform([batch, 2], _stream_seed(seed, _CROP))
    offset = (2.0 * draws[:, 0] - 1.0) * gain
    shift = tf.cast(tf.floor(draws[:, 1] * tf.cast(frames // 2 + 1, tf.float32)), tf.int32)
    positions = tf.math.floormod(tf.range(frames)[tf.newaxis, :] - shift[:, tf.newaxis],
                                 frames)
    rolled = tf.gather(masked, positions, axis=2, batch_dims=1)
    return rolled + offset[:, tf.newaxis, tf.newaxis]


def sum_moments(rows: Iterable[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """(key, `frame_moments` row) pairs -> key -> their float64 sum, keys sorted."""
    sums: dict[str, np.ndarray] = {}
    for key, row in rows:
        sums[key] = sums.get(key, 0.0) + np.asarray(row, np.float64)
    return dict(sorted(sums.items()))


@functools.lru_cache(maxsize=8)
def _speaker_moments(files: tuple[str, ...], stamp: int, logmel_fields: tuple,
                     centre: tuple[float, ...]) -> tuple[tuple[str, np.ndarray], ...]:
    del stamp  # cache key only: a re-prepared folder is read again
    config = FrontEndConfig(**dict(logmel_fields))
    compute = tf.function(functools.partial(clip_band_moments, config=config,
                                            centre=np.asarray(centre, np.float32)))

    def parse(serialized):
        features = schema.parse_audio(serialized)
        return (schema.waveform_to_float(schema.decode_waveform_int16(features["waveform"])),
                tf.cast(features["num_samples"], tf.int32), features["speaker"])

    def rows():
        for waveforms, num_samples, speakers in tf.data.TFRecordDataset(
                list(files)).map(parse).padded_batch(32):
            for speaker, row in zip(speakers.numpy(),
                                    compute(waveforms, num_samples).numpy()):
                yield speaker.decode("utf-8"), row

    sums = sum_moments(rows())
    log.info("speaker statistics: %d speakers from %d voiced frames", len(sums),
             int(sum(row[0] for row in sums.values())))
    return tuple(sums.items())


def speaker_moments(data: DatasetInfo, config: FrontEndConfig) -> dict[str, np.ndarray]:
    """Speaker -> `[1 + 2 * mels]` float64 moments (centred on the training
    band means) summed over the voiced frames of all of the speaker's clips in
    every audio split of `data` (labels are not read; the prepared splits hold
    only clips of the configured classes).

    Speaker normalisation (`--speaker_normalisation`) uses them: each speaker,
    a test speaker included, is normalised by its own clips. Computed once per
    process and prepared folder.
    """
    files = tuple(path for split in AUDIO_SPLITS if data.num_examples(split)
                  for path in data.files(split, "audio"))
    stamp = os.stat(os.path.join(data.data_dir, DATASET_JSON)).st_mtime_ns
    fields = tuple((name, getattr(config, name)) for name in PREPARED_FRONTEND_FIELDS)
    centre = tuple(float(v) for v in data.statistics.mean)
    return dict(_speaker_moments(files, stamp, fields, centre))


def speaker_statistics(data: DatasetInfo, config: FrontEndConfig
                       ) -> dict[str, BandStatistics]:
    """Speaker -> band statistics of `speaker_moments`."""
    return {name: statistics_from_moment_sums(row, data.statistics.mean)
            for name, row in speaker_moments(data, config).items()}


def _speaker_lookup(data: DatasetInfo, config: FrontEndConfig):
    """speaker [B] string -> (mean [B, mels], std [B, mels]) for `normalise`,
    or None without speaker normalisation."""
    if config.speaker_normalisation == "none":
        return None
    by_speaker = speaker_statistics(data, config)
    names = sorted(by_speaker)
    means = tf.constant(np.stack([by_speaker[n].mean for n in names]), tf.float32)
    stds = tf.constant(np.stack([by_speaker[n].std for n in names]), tf.float32)

    def lookup(speakers):
        # A [B, speakers] string comparison, not a lookup table: a table is a
        # resource that tf.data and SavedModel tracing report on the console
        # (benign ERROR / WARNING lines) every time the pipeline is built.
        match = tf.equal(speakers[:, tf.newaxis], tf.constant(names)[tf.newaxis, :])
        rows = tf.where(tf.reduce_any(match, axis=1),
                        tf.argmax(tf.cast(match, tf.int32), axis=1, output_type=tf.int32),
                        -1)
        known = tf.debugging.Assert(tf.reduce_all(rows >= 0), [
            f"--speaker_normalisation: speakers without statistics in {data.data_dir}:",
            tf.boolean_mask(speakers, rows < 0)])
        with tf.control_dependencies([known]):
            rows = tf.identity(rows)
        return speaker_row_statistics(tf.gather(means, rows), tf.gather(stds, rows),
                                      data.statistics, config.speaker_normalisation)

    return lookup


def unlabeled_pool(data: DatasetInfo, config: Config) -> tuple[str, ...]:
    """The splits whose clips are the run's unlabeled clips, in index order:
    train_unlabeled (unless `--nounlabeled_train_clips`), then with
    `--unlabeled_test_clips` the test split (its labels unread;
    `unlabeled_dataset`)."""
    pool = ("train_unlabeled",) if config.input.unlabeled_train_clips else ()
    if config.input.unlabeled_test_clips:
        pool += ("test",)
    return tuple(split for split in pool if data.num_examples(split))


def unlabeled_pool_size(data: DatasetInfo, config: Config) -> int:
    """Clips in the unlabeled pool (the pseudo-label slots)."""
    return sum(data.num_examples(split) for split in unlabeled_pool(data, config))


def unlabeled_dataset(data: DatasetInfo, config: Config, *, training: bool,
                      batch_size: int,
                      input_context: tf.distribute.InputContext | None = None,
                      views: bool = False) -> tf.data.Dataset:
    """Batches of the unlabeled pool (`unlabeled_pool`), as `audio_dataset`'s,
    with `label` -1 throughout and `index` numbering the pool: a test clip's
    index is its index in the test split plus the train_unlabeled count (0
    with `--nounlabeled_train_clips`). With
    train_unlabeled alone, exactly `audio_dataset(data, "train_unlabeled")`."""
    parts, offset = [], 0
    for split in unlabeled_pool(data, config):
        parts.append((split, offset, split != "train_unlabeled"))
        offset += data.num_examples(split)
    if not parts:
        raise ValueError(f"no unlabeled clips in {data.data_dir}")
    return _audio_batches(data, tuple(parts), "train_unlabeled", config,
                          training=training, batch_size=batch_size,
                          input_context=input_context, views=views)


def audio_dataset(data: DatasetInfo, split: str, config: Config, *, training: bool,
                  batch_size: int,
                  input_context: tf.distribute.InputContext | None = None,
                  views: bool = False) -> tf.data.Dataset:
    """Batches of one audio split.

    Training: shuffled, repeated forever, full batches only, random crops and
    optional SpecAugment. Evaluation: file order, one pass, last partial batch
    kept, centred crops. Elements are dicts:

      logmel      [B, mels, T] float32, log-mel, normalised
      label       [B] int32, class id or -1 where hidden
      true_label  [B] int32 (analysis only; never feed it to a loss)
      index       [B] int32, position in the split
      speaker     [B] tf.string
      logmel_weak, logmel_strong
                  [B, mels, T] float32, only with `views` (training): the crop
                  without masks and its `strong_augment`ed copy
    """
    return _audio_batches(data, ((split, 0, False),), split, config,
                          training=training, batch_size=batch_size,
                          input_context=input_context, views=views)


def _audio_batches(data: DatasetInfo, parts: tuple[tuple[str, int, bool], ...],
                   stream: str, config: Config, *, training: bool, batch_size: int,
                   input_context: tf.distribute.InputContext | None,
                   views: bool) -> tf.data.Dataset:
    """`audio_dataset` over the records of `parts`, (split, index offset, hide
    labels) each, read one after the other before shuffling; `stream` names
    the random stream of the batches."""
    inputs = config.input
    frontend = config.frontend
    # Evaluation keeps file order, so its batches (and anything indexed by
    # position in them) are the same on every pass.
    deterministic = inputs.deterministic or not training
    precomputed = inputs.use_precomputed_logmel
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    num_mels = frontend.num_mels

    def parse(serialized, offset, hide):
        if precomputed:
            features = schema.parse_logmel(serialized)
            signal = schema.decode_logmel(features["logmel"], num_mels)
            length = tf.cast(features["num_frames"], tf.int32)
        else:
            features = schema.parse_audio(serialized)
            signal = schema.decode_waveform_int16(features["waveform"])
            length = tf.cast(features["num_samples"], tf.int32)
        label = tf.cast(features["label"], tf.int32)
        return {"signal": signal, "length": length,
                "label": tf.fill(tf.shape(label), schema.HIDDEN_LABEL) if hide else label,
                "true_label": tf.cast(features["true_label"], tf.int32),
                "index": tf.cast(features["index"], tf.int32) + offset,
                "speaker": features["speaker"]}

    dataset = None
    for split, offset, hide in parts:
        files = data.files(split, "logmel" if precomputed else "audio")
        part = _records(files, training, config.training_seed, deterministic,
                        input_context).map(
            functools.partial(parse, offset=offset, hide=hide),
            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        dataset = part if dataset is None else dataset.concatenate(part)
    if training:
        if inputs.cache:
            # After parsing, so later epochs skip protobuf parsing and decoding.
            dataset = dataset.cache()
        # Parts are read one after the other: a buffer smaller than the pool
        # would leave the last part's clips late in every pass.
        buffer = inputs.shuffle_buffer
        if len(parts) > 1:
            buffer = max(buffer, sum(data.num_examples(split) for split, _, _ in parts))
        dataset = dataset.shuffle(buffer, seed=config.training_seed,
                                  reshuffle_each_iteration=True).repeat()
    dataset = dataset.padded_batch(batch_size, drop_remainder=training)
    dataset = _seeded_batches(dataset, config.training_seed, pipeline_id, stream)
    statistics = data.statistics
    speaker_lookup = _speaker_lookup(data, frontend)

    def features(batch, seed):
        crop = None
        if training:
            crop = tf.random.stateless_uniform(
                tf.shape(batch["length"]), _stream_seed(seed, _CROP))
        speaker = speaker_lookup(batch["speaker"]) if speaker_lookup else None
        if precomputed:
            logmel = logmel_features(batch["signal"], batch["length"], statistics,
                                     frontend, crop, speaker)
        else:
            logmel = waveform_features(schema.waveform_to_float(batch["signal"]),
                                       batch["length"], statistics, frontend, crop,
                                       speaker=speaker)
        out = {key: batch[key] for key in ("label", "true_label", "index", "speaker")}
        if training and views:
            shape = [None, num_mels, frontend.num_frames]
            out["logmel_weak"] = tf.ensure_shape(logmel, shape)
            out["logmel_strong"] = tf.ensure_shape(strong_augment(
                logmel, seed, freq_mask_bands=inputs.freq_mask_bands,
                time_mask_frames=inputs.time_mask_frames,
                num_freq_masks=inputs.num_freq_masks,
                num_time_masks=inputs.num_time_masks,
                gain=config.loss.strong_gain), shape)
        if training and inputs.spec_augment:
            logmel = spec_augment(
                logmel, seed, freq_mask_bands=inputs.freq_mask_bands,
                time_mask_frames=inputs.time_mask_frames,
                num_freq_masks=inputs.num_freq_masks,
                num_time_masks=inputs.num_time_masks)
        out["logmel"] = tf.ensure_shape(logmel, [None, num_mels, frontend.num_frames])
        return out

    dataset = dataset.map(features, num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic)
    return dataset.prefetch(AUTOTUNE).with_options(_options(deterministic))


def face_dataset(data: DatasetInfo, config: Config, *, training: bool,
                 batch_size: int,
                 input_context: tf.distribute.InputContext | None = None,
                 ) -> tf.data.Dataset:
    """Batches of face images: {"image": [B, H, W, 1] float32 in [-1, 1],
    "label": [B] int32}. Training: shuffled, repeated, optional random flips."""
    inputs = config.input
    deterministic = inputs.deterministic or not training
    size = data.face_size
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    dataset = _records(data.files(FACE_SPLIT, "faces"), training, config.training_seed,
                       deterministic, input_context)
    if training:
        if inputs.cache:
            dataset = dataset.cache()
        dataset = dataset.shuffle(inputs.shuffle_buffer, seed=config.training_seed,
                                  reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = _seeded_batches(dataset, config.training_seed, pipeline_id, FACE_SPLIT)

    def decode(serialized, seed):
        features = schema.parse_face(serialized)
        images = schema.decode_faces(features["image"], size)
        images = tf.cast(images, tf.float32) / 127.5 - 1.0
        if training and inputs.face_flip:
            flip = tf.random.stateless_uniform(
                [tf.shape(images)[0]], _stream_seed(seed, _FLIP)) < 0.5
            images = tf.where(flip[:, tf.newaxis, tf.newaxis, tf.newaxis],
                              tf.reverse(images, axis=[2]), images)
        return {"image": images, "label": tf.cast(features["label"], tf.int32)}

    dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic)
    return dataset.prefetch(AUTOTUNE).with_options(_options(deterministic))


def _per_replica(global_batch: int, input_context) -> int:
    if input_context is None:
        return global_batch
    return input_context.get_per_replica_batch_size(global_batch)


def make_train_input_fn(config: Config) -> Callable[[tf.distribute.InputContext | None],
                                                    tf.data.Dataset]:
    """Returns `input_fn(input_context)` for `strategy.distribute_datasets_from_function`.

    The dict it yields is described in the module docstring.
    """
    data = DatasetInfo(config)
    inputs = config.input

    def input_fn(input_context: tf.distribute.InputContext | None = None):
        streams = {}
        if config.loss.use_translation:
            faces = face_dataset(
                data, config, training=True, input_context=input_context,
                batch_size=_per_replica(inputs.face_batch_size, input_context))
            streams["faces"] = faces.map(
                lambda b: {"face_images": b["image"], "face_labels": b["label"]})
        audio = functools.partial(audio_dataset, data, config=config, training=True,
                                  input_context=input_context)
        if data.num_examples("train_labeled"):
            streams["labeled"] = audio(
                "train_labeled",
                batch_size=_per_replica(inputs.labeled_batch_size, input_context)).map(
                    lambda b: {"labeled_logmel": b["logmel"], "labeled_labels": b["label"]})
        consistency = config.loss.use_consistency
        uses_unlabeled = (config.loss.use_translation or config.graph.use_pseudo_labels
                          or consistency)
        if uses_unlabeled and unlabeled_pool(data, config):
            def unlabeled(b):
                out = {"unlabeled_logmel": b["logmel"], "unlabeled_index": b["index"]}
                if consistency:
                    # true_label: for the logged target accuracy only.
                    out.update(unlabeled_weak_logmel=b["logmel_weak"],
                               unlabeled_strong_logmel=b["logmel_strong"],
                               unlabeled_true_label=b["true_label"])
                return out
            streams["unlabeled"] = unlabeled_dataset(
                data, config, training=True, input_context=input_context,
                views=consistency,
                batch_size=_per_replica(inputs.unlabeled_batch_size, input_context)
            ).map(unlabeled)
        zipped = tf.data.Dataset.zip(tuple(streams.values()))
        merged = zipped.map(lambda *parts: {k: v for part in parts for k, v in part.items()})
        return merged.prefetch(AUTOTUNE).with_options(_options(inputs.deterministic))

    return input_fn


def eval_dataset(config: Config, split: str,
                 data: DatasetInfo | None = None) -> tf.data.Dataset:
    """One centred-crop pass over `split` (see `audio_dataset` for the elements).

    `data`: the run's `DatasetInfo`, if it already has one (else read here).
    """
    data = data or DatasetInfo(config)
    return audio_dataset(data, split, config, training=False,
                         batch_size=config.input.eval_batch_size)


def split_clips(data: DatasetInfo, split: str, limit: int | None = None
                ) -> list[dict]:
    """The raw clips of an audio split, one by one, in file order (as
    `eval_dataset` reads them): dicts of `waveform` [samples] float32 in
    [-1, 1), `true_label` and `index` ints. At most `limit` clips when given.

    For exporting: the served models take whole waveforms, not padded batches.
    """
    dataset = tf.data.TFRecordDataset(data.files(split, "audio"))
    if limit is not None:
        dataset = dataset.take(limit)
    clips = []
    for serialized in dataset:
        features = schema.parse_audio(serialized)
        samples = schema.decode_waveform_int16(features["waveform"])
        clips.append({"waveform": schema.waveform_to_float(samples).numpy(),
                      "true_label": int(features["true_label"]),
                      "index": int(features["index"]),
                      "speaker": features["speaker"].numpy().decode("utf-8")})
    return clips
