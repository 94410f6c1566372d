"""tf.data readers: shapes, dtypes, ranges, sharding, determinism, and the
precomputed-log-mel path against the raw-waveform reference."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_folder_corpora, small_config
from i2a_tf.config import ConfigError
from i2a_tf.data import pipeline
from i2a_tf.data.prepare import prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pipeline"))
    speech, faces = make_folder_corpora(os.path.join(root, "corpora"), seconds=1.2)
    config = small_config(os.path.join(root, "work"), speech, faces,
                          precompute_logmel=True, records_per_shard=4)
    prepare(config)
    return config, pipeline.DatasetInfo(config)


def _with_input(config, **changes):
    return dataclasses.replace(config, input=dataclasses.replace(config.input, **changes))


def test_train_input_fn_yields_the_documented_dict(prepared):
    config, data = prepared
    batch = next(iter(pipeline.make_train_input_fn(config)(None)))
    assert set(batch) == {"face_images", "face_labels", "labeled_logmel",
                          "labeled_labels", "unlabeled_logmel", "unlabeled_index"}
    assert batch["face_images"].shape == (4, 48, 48, 1)
    assert batch["face_images"].dtype == tf.float32
    assert -1.0 <= float(tf.reduce_min(batch["face_images"])) < 0.0
    assert 0.0 < float(tf.reduce_max(batch["face_images"])) <= 1.0
    assert batch["labeled_logmel"].shape == (4, 64, 50)
    assert batch["unlabeled_logmel"].shape == (4, 64, 50)
    for key in ("face_labels", "labeled_labels"):
        assert batch[key].dtype == tf.int32
        assert np.all((batch[key].numpy() >= 0) & (batch[key].numpy() < 5))
    index = batch["unlabeled_index"].numpy()
    assert np.all((index >= 0) & (index < data.num_examples("train_unlabeled")))
    assert np.all(np.isfinite(batch["labeled_logmel"].numpy()))
    assert np.abs(batch["labeled_logmel"].numpy()).max() < 20


def test_empty_unlabeled_split_is_left_out(tmp_path):
    speech, faces = make_folder_corpora(str(tmp_path / "corpora"),
                                        speakers=("spkA", "spkD"), clips_per_class=1)
    config = small_config(str(tmp_path / "work"), speech, faces, label_fraction=1.0)
    prepare(config)
    batch = next(iter(pipeline.make_train_input_fn(config)(None)))
    assert "unlabeled_logmel" not in batch and "labeled_logmel" in batch


def _pass(dataset):
    batches = list(dataset)
    return {key: np.concatenate([b[key].numpy() for b in batches])
            for key in ("logmel", "label", "true_label", "index", "speaker")}


def test_unlabeled_pool_is_train_unlabeled_unless_test_clips_are_asked_for(prepared):
    config, data = prepared
    assert pipeline.unlabeled_pool(data, config) == ("train_unlabeled",)
    alone = _pass(pipeline.unlabeled_dataset(data, config, training=False, batch_size=3))
    split = _pass(pipeline.audio_dataset(data, "train_unlabeled", config, training=False,
                                         batch_size=3))
    for key in alone:
        np.testing.assert_array_equal(alone[key], split[key])
    # The training stream too: same records, crops and masks as the split's own.
    one = next(iter(pipeline.unlabeled_dataset(data, config, training=True, batch_size=4)))
    two = next(iter(pipeline.audio_dataset(data, "train_unlabeled", config, training=True,
                                           batch_size=4)))
    np.testing.assert_array_equal(one["logmel"].numpy(), two["logmel"].numpy())
    np.testing.assert_array_equal(one["index"].numpy(), two["index"].numpy())


def test_unlabeled_test_clips_join_the_pool_with_hidden_labels_and_shifted_indices(prepared):
    config, data = prepared
    transductive = _with_input(config, unlabeled_test_clips=True)
    num_unlabeled, num_test = (data.num_examples("train_unlabeled"),
                               data.num_examples("test"))
    assert num_test > 0
    assert pipeline.unlabeled_pool(data, transductive) == ("train_unlabeled", "test")
    assert pipeline.unlabeled_pool_size(data, transductive) == num_unlabeled + num_test
    pool = _pass(pipeline.unlabeled_dataset(data, transductive, training=False,
                                            batch_size=3))
    unlabeled = _pass(pipeline.eval_dataset(config, "train_unlabeled", data))
    test = _pass(pipeline.eval_dataset(config, "test", data))
    assert np.all(pool["label"] == -1)
    np.testing.assert_array_equal(pool["index"], np.concatenate(
        [unlabeled["index"], test["index"] + num_unlabeled]))
    assert sorted(pool["index"]) == list(range(num_unlabeled + num_test))
    np.testing.assert_array_equal(pool["true_label"], np.concatenate(
        [unlabeled["true_label"], test["true_label"]]))
    np.testing.assert_array_equal(pool["logmel"][num_unlabeled:], test["logmel"])
    # Training draws from both parts; every index stays inside the pool.
    stream = pipeline.make_train_input_fn(transductive)(None)
    seen = np.concatenate([b["unlabeled_index"].numpy()
                           for b in stream.take(3 * (num_unlabeled + num_test))])
    assert seen.max() < num_unlabeled + num_test
    assert (seen >= num_unlabeled).any() and (seen < num_unlabeled).any()


def test_unlabeled_test_clips_alone_when_every_training_clip_is_labeled(tmp_path):
    speech, faces = make_folder_corpora(str(tmp_path / "corpora"),
                                        speakers=("spkA", "spkD"), clips_per_class=1)
    config = small_config(str(tmp_path / "work"), speech, faces, label_fraction=1.0)
    prepare(config)
    data = pipeline.DatasetInfo(config)
    transductive = _with_input(config, unlabeled_test_clips=True)
    assert pipeline.unlabeled_pool(data, transductive) == ("test",)
    pool = _pass(pipeline.unlabeled_dataset(data, transductive, training=False,
                                            batch_size=4))
    assert sorted(pool["index"]) == list(range(data.num_examples("test")))
    assert np.all(pool["label"] == -1)
    # The consistency views come with the pool's clips too.
    batch = next(iter(pipeline.make_train_input_fn(
        dataclasses.replace(transductive, loss=dataclasses.replace(
            transductive.loss, use_consistency=True)))(None)))
    assert batch["unlabeled_weak_logmel"].shape == batch["unlabeled_strong_logmel"].shape
    assert np.all(batch["unlabeled_index"].numpy() < data.num_examples("test"))


def test_test_clips_alone_without_the_training_speakers_unlabeled_clips(prepared):
    config, data = prepared
    test_only = _with_input(config, unlabeled_test_clips=True, unlabeled_train_clips=False)
    num_test = data.num_examples("test")
    assert data.num_examples("train_unlabeled") > 0 and num_test > 0
    assert pipeline.unlabeled_pool(data, test_only) == ("test",)
    assert pipeline.unlabeled_pool_size(data, test_only) == num_test
    pool = _pass(pipeline.unlabeled_dataset(data, test_only, training=False, batch_size=3))
    test = _pass(pipeline.eval_dataset(config, "test", data))
    assert np.all(pool["label"] == -1)
    np.testing.assert_array_equal(pool["index"], test["index"])
    np.testing.assert_array_equal(pool["true_label"], test["true_label"])
    np.testing.assert_array_equal(pool["logmel"], test["logmel"])
    # Every training batch of the unlabeled stream is the test speakers' clips.
    stream = pipeline.make_train_input_fn(test_only)(None)
    seen = np.concatenate([b["unlabeled_index"].numpy() for b in stream.take(2 * num_test)])
    assert set(seen) == set(range(num_test))


def test_input_context_sets_batch_and_shards_disjointly(prepared):
    config, data = prepared
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        batch = next(iter(pipeline.make_train_input_fn(config)(context)))
        assert batch["labeled_logmel"].shape[0] == 2  # global 4 over 2 replicas
        assert batch["face_images"].shape[0] == 2
        indices = []
        for part in pipeline.audio_dataset(data, "train_unlabeled", config,
                                           training=False, batch_size=3,
                                           input_context=context):
            indices.extend(part["index"].numpy().tolist())
        seen.append(set(indices))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(data.num_examples("train_unlabeled")))


def test_record_sharding_of_a_single_file_is_disjoint_and_complete(tmp_path):
    speech, faces = make_folder_corpora(str(tmp_path / "corpora"), clips_per_class=1)
    config = small_config(str(tmp_path / "work"), speech, faces, records_per_shard=1000)
    prepare(config)
    data = pipeline.DatasetInfo(config)
    assert len(data.files("train_unlabeled", "audio")) == 1
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        seen.append({int(i) for part in pipeline.audio_dataset(
            data, "train_unlabeled", config, training=False, batch_size=2,
            input_context=context) for i in part["index"].numpy()})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(data.num_examples("train_unlabeled")))


def test_streams_draw_different_random_seeds():
    dataset = tf.data.Dataset.range(3)
    labeled = [s.numpy() for _, s in pipeline._seeded_batches(dataset, 0, 0, "train_labeled")]
    unlabeled = [s.numpy() for _, s in pipeline._seeded_batches(dataset, 0, 0,
                                                                "train_unlabeled")]
    assert all(not np.array_equal(a, b) for a, b in zip(labeled, unlabeled))
    assert len({tuple(s) for s in labeled}) == 3


def test_front_end_flags_must_match_the_prepared_records(prepared):
    config, _ = prepared
    changed = dataclasses.replace(config, frontend=dataclasses.replace(
        config.frontend, num_mels=40))
    with pytest.raises(ConfigError, match="--num_mels=40: the records in .* were "
                       "prepared with num_mels=64"):
        pipeline.eval_dataset(changed, "test")
    renamed = dataclasses.replace(config, data=dataclasses.replace(
        config.data, classes=("a", "b", "c", "d", "e")))
    with pytest.raises(ConfigError, match="--classes=a,b,c,d,e"):
        pipeline.make_train_input_fn(renamed)
    # num_frames only shapes how records are read: no re-prepare needed.
    longer = dataclasses.replace(config, frontend=dataclasses.replace(
        config.frontend, num_frames=80))
    assert next(iter(pipeline.eval_dataset(longer, "test")))["logmel"].shape[2] == 80


def test_deterministic_option_repeats_batches_exactly(prepared):
    config, _ = prepared
    config = _with_input(config, deterministic=True)

    def first_batches():
        iterator = iter(pipeline.make_train_input_fn(config)(None))
        return [next(iterator) for _ in range(3)]

    for a, b in zip(first_batches(), first_batches()):
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_train_seed_changes_the_training_stream_not_the_data(prepared):
    config, _ = prepared
    config = _with_input(config, deterministic=True)

    def first_batches(train_seed):
        seeded = dataclasses.replace(
            config, train=dataclasses.replace(config.train, train_seed=train_seed))
        iterator = iter(pipeline.make_train_input_fn(seeded)(None))
        return [next(iterator) for _ in range(3)]

    def same(a, b):
        return all(np.array_equal(x[key].numpy(), y[key].numpy())
                   for x, y in zip(a, b) for key in x)

    default = first_batches(-1)
    # -1 is --seed itself; another train_seed draws other crops and orders
    # (of the same prepared records: the split and labeled subset are made by
    # prepare, from --seed alone).
    assert same(default, first_batches(config.data.seed))
    assert not same(default, first_batches(config.data.seed + 1))


def test_eval_is_one_centred_pass_with_true_labels(prepared):
    config, data = prepared
    batches = list(pipeline.eval_dataset(config, "test"))
    labels = np.concatenate([b["label"].numpy() for b in batches])
    assert len(labels) == data.num_examples("test")
    np.testing.assert_array_equal(
        labels, np.concatenate([b["true_label"].numpy() for b in batches]))
    again = list(pipeline.eval_dataset(config, "test"))
    np.testing.assert_array_equal(batches[0]["logmel"].numpy(), again[0]["logmel"].numpy())


def test_training_crops_are_random(prepared):
    config, data = prepared
    config = _with_input(config, spec_augment=False)
    # One clip's training windows across epochs differ; its eval window never does.
    dataset = pipeline.audio_dataset(data, "train_unlabeled", config, training=True,
                                     batch_size=1)
    windows = {}
    for batch in dataset.take(8 * data.num_examples("train_unlabeled")):
        windows.setdefault(int(batch["index"][0]), []).append(batch["logmel"].numpy())
    varied = [len({w.tobytes() for w in ws}) > 1 for ws in windows.values() if len(ws) > 2]
    assert varied and any(varied)


def test_precomputed_logmel_matches_raw_waveform_path(prepared):
    config, data = prepared
    raw = list(pipeline.audio_dataset(data, "test", config, training=False, batch_size=8))
    pre = list(pipeline.audio_dataset(data, "test", _with_input(
        config, use_precomputed_logmel=True), training=False, batch_size=8))
    for a, b in zip(raw, pre):
        np.testing.assert_array_equal(a["index"].numpy(), b["index"].numpy())
        np.testing.assert_allclose(a["logmel"].numpy(), b["logmel"].numpy(), atol=1e-4)


def test_spec_augment_masks_whole_bands_and_frames():
    logmel = tf.ones([3, 16, 40])
    out = pipeline.spec_augment(logmel, tf.constant([1, 2]), freq_mask_bands=4,
                                time_mask_frames=10, num_freq_masks=1,
                                num_time_masks=1).numpy()
    assert out.shape == (3, 16, 40) and set(np.unique(out)) <= {0.0, 1.0}
    for example in out:
        zero_bands = np.all(example == 0, axis=1)
        zero_frames = np.all(example == 0, axis=0)
        # Every zero lies in a fully masked band or a fully masked frame.
        assert np.all((example == 1) | zero_bands[:, None] | zero_frames[None, :])
        assert zero_bands.sum() <= 4 and zero_frames.sum() <= 10
    assert (out == 0).any()
    same = pipeline.spec_augment(logmel, tf.constant([1, 2]), freq_mask_bands=4,
                                 time_mask_frames=10, num_freq_masks=1,
                                 num_time_masks=1).numpy()
    np.testing.assert_array_equal(out, same)  # stateless: same seed, same masks


def test_missing_precomputed_records_is_a_clear_error(tmp_path):
    speech, faces = make_folder_corpora(str(tmp_path / "corpora"), clips_per_class=1)
    config = small_config(str(tmp_path / "work"), speech, faces)
    prepare(config)
    with pytest.raises(ValueError, match="--use_precomputed_logmel"):
        pipeline.eval_dataset(_with_input(config, use_precomputed_logmel=True), "test")


_MIRRORED_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from i2a_tf import config as config_lib
from i2a_tf.data import pipeline
config = config_lib.config_from_dict(json.load(open(sys.argv[1])))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
dataset = strategy.distribute_datasets_from_function(pipeline.make_train_input_fn(config))
batch = next(iter(dataset))
shapes = {key: [list(t.shape) for t in strategy.experimental_local_results(value)]
          for key, value in batch.items()}
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "shapes": shapes}))
"""


def test_train_input_fn_under_mirrored_strategy_on_two_cpu_devices(prepared, tmp_path):
    """Per-replica batches through distribute_datasets_from_function (fresh
    process: logical devices must be set before TensorFlow initialises)."""
    import json
    import subprocess
    import sys

    from conftest import REPO_ROOT
    from i2a_tf import config as config_lib
    config, _ = prepared
    config_path = tmp_path / "config.json"
    config_lib.write_config(config, str(config_path))
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, str(config_path)], capture_output=True,
        text=True, timeout=300, cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    # Global batch 4 per stream -> 2 per replica on each of the two devices.
    assert report["shapes"]["labeled_logmel"] == [[2, 64, 50], [2, 64, 50]]
    assert report["shapes"]["face_images"] == [[2, 48, 48, 1], [2, 48, 48, 1]]
    assert report["shapes"]["unlabeled_index"] == [[2], [2]]


def _frontend(config, **changes):
    return dataclasses.replace(config, frontend=dataclasses.replace(config.frontend,
                                                                    **changes))


def test_speaker_statistics_pool_every_splits_voiced_frames_per_speaker(prepared):
    config, data = prepared
    from i2a_tf.data import frontend, schema
    frames = {}
    for split in pipeline.AUDIO_SPLITS:
        if not data.num_examples(split):
            continue
        for serialized in tf.data.TFRecordDataset(data.files(split, "audio")):
            features = schema.parse_audio(serialized)
            waveform = schema.waveform_to_float(
                schema.decode_waveform_int16(features["waveform"]))[tf.newaxis]
            logmel = frontend.log_mel(waveform, config.frontend)
            count = frontend.num_frames_for([waveform.shape[1]], config.frontend)
            start, end = frontend.voiced_bounds(logmel, count, config.frontend.trim_db)
            voiced = logmel.numpy()[0, int(start[0]):int(end[0]) + 1]
            frames.setdefault(features["speaker"].numpy().decode(), []).append(voiced)
    statistics = pipeline.speaker_statistics(data, config.frontend)
    everyone = set(data.info["speakers"]["train"]) | set(data.info["speakers"]["test"])
    assert set(statistics) == set(frames) == everyone
    for speaker, chunks in frames.items():
        pooled = np.concatenate(chunks).astype(np.float64)
        np.testing.assert_allclose(statistics[speaker].mean, pooled.mean(0), atol=1e-4)
        np.testing.assert_allclose(statistics[speaker].std, pooled.std(0), atol=1e-3)


@pytest.mark.parametrize("mode", ["mean", "mean_std"])
def test_speaker_normalisation_uses_each_rows_speaker(prepared, mode):
    config, data = prepared
    statistics = pipeline.speaker_statistics(data, config.frontend)
    # train_labeled: three speakers, so a row given another row's speaker fails.
    plain = list(pipeline.eval_dataset(config, "train_labeled", data))
    by_speaker = list(pipeline.eval_dataset(
        _frontend(config, speaker_normalisation=mode), "train_labeled", data))
    assert len({s for b in by_speaker for s in b["speaker"].numpy()}) > 1
    band = data.statistics
    for a, b in zip(plain, by_speaker):
        # pad_mode 'repeat': every frame is valid, so the window is recoverable.
        window = a["logmel"].numpy() * band.std[:, None] + band.mean[:, None]
        for row, speaker in enumerate(b["speaker"].numpy()):
            own = statistics[speaker.decode()]
            std = own.std if mode == "mean_std" else band.std
            expected = (window[row] - own.mean[:, None]) / std[:, None]
            np.testing.assert_allclose(b["logmel"].numpy()[row], expected, atol=2e-3)
    assert not np.allclose(plain[0]["logmel"].numpy(), by_speaker[0]["logmel"].numpy())


def test_speaker_lookup_rows_and_a_speaker_without_statistics(prepared):
    config, data = prepared
    frontend = _frontend(config, speaker_normalisation="mean_std").frontend
    statistics = pipeline.speaker_statistics(data, frontend)
    names = sorted(statistics)
    lookup = pipeline._speaker_lookup(data, frontend)
    mean, std = lookup(tf.constant([names[-1], names[0], names[-1]]))
    for row, name in enumerate([names[-1], names[0], names[-1]]):
        np.testing.assert_allclose(mean.numpy()[row], statistics[name].mean, atol=1e-6)
        np.testing.assert_allclose(std.numpy()[row], statistics[name].std, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="nobody"):
        lookup(tf.constant([names[0], "nobody"]))


def test_unknown_speaker_normalisation_is_a_config_error():
    from i2a_tf.config import FrontEndConfig
    with pytest.raises(ConfigError, match="--speaker_normalisation=global"):
        FrontEndConfig(speaker_normalisation="global").validate()
