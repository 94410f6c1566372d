"""Speaker-independent splits and the stratified labeled subset."""

import numpy as np
import pytest

from i2a_tf.config import ConfigError, DataConfig
from i2a_tf.data import splits

SPEAKERS = [f"{i:02d}" for i in (3, 8, 9, 10, 11, 12, 13, 14, 15, 16)]


def test_named_test_and_val_speakers():
    split = splits.split_speakers(SPEAKERS * 3, DataConfig(
        test_speakers=("03", "08"), val_speakers=("16",)))
    assert split.test == ("03", "08") and split.val == ("16",)
    assert set(split.train) == set(SPEAKERS) - {"03", "08", "16"}


def test_folds_partition_the_speakers():
    seen = []
    for fold in range(5):
        split = splits.split_speakers(SPEAKERS, DataConfig(test_fold=fold, num_folds=5))
        assert len(split.test) == 2 and not set(split.test) & set(split.train)
        seen.extend(split.test)
    assert sorted(seen) == SPEAKERS


def test_seeded_fraction_is_reproducible_and_disjoint():
    a = splits.split_speakers(SPEAKERS, DataConfig(test_speaker_fraction=0.2,
                                                   val_speaker_fraction=0.15, seed=4))
    b = splits.split_speakers(list(reversed(SPEAKERS)), DataConfig(
        test_speaker_fraction=0.2, val_speaker_fraction=0.15, seed=4))
    assert a == b
    assert len(a.test) == 2 and len(a.val) == 1 and len(a.train) == 7
    assert not (set(a.test) & set(a.val) or set(a.test) & set(a.train)
                or set(a.val) & set(a.train))


def test_validation_speakers_never_overlap_resolved_test_speakers():
    with pytest.raises(ConfigError, match=r"--val_speakers=03: speaker\(s\) 03 are also test"):
        splits.split_speakers(SPEAKERS, DataConfig(test_fold=0, val_speakers=("03",)))
    drawn = splits.split_speakers(SPEAKERS, DataConfig(test_speaker_fraction=0.5, seed=1))
    with pytest.raises(ConfigError, match="are also test speakers"):
        splits.split_speakers(SPEAKERS, DataConfig(test_speaker_fraction=0.5, seed=1,
                                                   val_speakers=drawn.test[:1]))


def test_unknown_or_exhausting_speakers_are_errors():
    with pytest.raises(ConfigError, match=r"--test_speakers=03,99: speaker\(s\) 99"):
        splits.split_speakers(SPEAKERS, DataConfig(test_speakers=("03", "99")))
    with pytest.raises(ConfigError, match="leave no training speaker"):
        splits.split_speakers(["a", "b"], DataConfig(test_speakers=("a",),
                                                     val_speakers=("b",)))
    with pytest.raises(ConfigError, match="needs >= 2"):
        splits.split_speakers(["a", "a"], DataConfig())


def test_labeled_subset_is_stratified_seeded_and_order_free():
    labels = [0] * 50 + [1] * 20 + [2] * 3
    ids = [f"u{i:03d}" for i in range(len(labels))]
    mask = splits.choose_labeled(labels, ids, 0.1, seed=1)
    counts = np.bincount(np.asarray(labels)[mask], minlength=3)
    assert counts.tolist() == [5, 2, 1]  # round(0.1 * n), at least one per class
    order = np.random.default_rng(0).permutation(len(labels))
    shuffled = splits.choose_labeled([labels[i] for i in order], [ids[i] for i in order],
                                     0.1, seed=1)
    assert sorted(np.asarray(ids)[order][shuffled]) == sorted(np.asarray(ids)[mask])
    assert splits.choose_labeled(labels, ids, 1.0, seed=1).all()
    assert not np.array_equal(mask, splits.choose_labeled(labels, ids, 0.1, seed=2))
