"""Speaker-independent splits and the stratified labeled subset.

Test (and optional validation) speakers are held out whole: no test speaker has a
clip in any training split. Within the training speakers, `label_fraction` of the
clips of each class keep their label (at least one per class that has clips);
the rest form the unlabeled split. All choices are seeded and independent of the
order the files were found in.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from i2a_tf.config import ConfigError, DataConfig

# Separate random streams, so changing one choice does not reshuffle the others.
_TEST_STREAM, _VAL_STREAM, _LABELED_STREAM = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class SpeakerSplit:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def _check_named(flag: str, named: Sequence[str], available: Sequence[str]) -> None:
    unknown = sorted(set(named) - set(available))
    if unknown:
        raise ConfigError(
            f"--{flag}={','.join(named)}: speaker(s) {', '.join(unknown)} not in the "
            f"corpus; its speakers are {', '.join(available)}")


def _draw(speakers: Sequence[str], fraction: float, seed: int, stream: int,
          keep_at_least: int) -> tuple[str, ...]:
    count = max(1, int(round(fraction * len(speakers))))
    count = min(count, len(speakers) - keep_at_least)
    if count < 1:
        return ()
    order = np.random.default_rng([seed, stream]).permutation(len(speakers))
    return tuple(sorted(speakers[i] for i in order[:count]))


def split_speakers(speakers: Sequence[str], config: DataConfig) -> SpeakerSplit:
    """Assigns every speaker to exactly one of train / val / test.

    Test: `config.test_speakers` if given; else fold `test_fold` of `num_folds`
    contiguous folds of the sorted speakers; else a seeded `test_speaker_fraction`.
    Validation: `val_speakers` if given, else a seeded `val_speaker_fraction` of
    the rest (possibly none). At least one training speaker must remain.
    """
    available = sorted(set(speakers))
    if len(available) < 2:
        raise ConfigError(
            f"the speech corpus has {len(available)} speaker(s) "
            f"({', '.join(available)}); a speaker-independent split needs >= 2")
    if config.test_speakers:
        _check_named("test_speakers", config.test_speakers, available)
        test = tuple(sorted(set(config.test_speakers)))
    elif config.test_fold >= 0:
        if config.num_folds > len(available):
            raise ConfigError(f"--num_folds={config.num_folds}: more folds than the "
                              f"{len(available)} speakers")
        bounds = np.linspace(0, len(available), config.num_folds + 1).round().astype(int)
        test = tuple(available[bounds[config.test_fold]:bounds[config.test_fold + 1]])
    else:
        test = _draw(available, config.test_speaker_fraction, config.seed,
                     _TEST_STREAM, keep_at_least=1)
    rest = [s for s in available if s not in test]
    if config.val_speakers:
        _check_named("val_speakers", config.val_speakers, available)
        val = tuple(sorted(set(config.val_speakers)))
        shared = sorted(set(val) & set(test))
        if shared:
            raise ConfigError(
                f"--val_speakers={','.join(config.val_speakers)}: speaker(s) "
                f"{', '.join(shared)} are also test speakers (test: {', '.join(test)})")
    elif config.val_speaker_fraction > 0:
        val = _draw(rest, config.val_speaker_fraction, config.seed, _VAL_STREAM,
                    keep_at_least=1)
    else:
        val = ()
    train = tuple(s for s in rest if s not in val)
    if not train:
        raise ConfigError(
            f"--test_speakers/--val_speakers leave no training speaker "
            f"(test {', '.join(test)}; val {', '.join(val)})")
    return SpeakerSplit(train=train, val=val, test=test)


def choose_labeled(labels: Sequence[int], utterance_ids: Sequence[str],
                   fraction: float, seed: int) -> np.ndarray:
    """Stratified labeled subset of the training clips.

    Args:
      labels: [N] class id per training clip.
      utterance_ids: [N] unique ids; the draw depends on ids, not on list order.
      fraction: in (0, 1]; per class, round(fraction * n_c) clips, at least 1.
    Returns:
      [N] bool, True for clips that keep their label.
    """
    labels = np.asarray(labels)
    labeled = np.zeros(labels.shape[0], bool)
    rng = np.random.default_rng([seed, _LABELED_STREAM])
    for class_id in np.unique(labels):
        members = np.flatnonzero(labels == class_id)
        members = members[np.argsort([utterance_ids[i] for i in members], kind="stable")]
        count = min(len(members), max(1, int(round(fraction * len(members)))))
        labeled[members[rng.permutation(len(members))[:count]]] = True
    return labeled
