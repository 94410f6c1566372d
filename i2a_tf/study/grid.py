"""The study's grid: named variants (flag sets) and the cells they run in.

A cell is one (fold, seed, budget, variant). Every cell of one (fold, seed,
budget) reads the same prepared records, so the variants' differences are
paired: same test speakers, same labeled clips, same initialisation seed.

With `--study_train_seeds=R` each (fold, seed, budget, variant) is trained R
times (runs 0..R-1); run r of every variant of one (fold, seed) gets the same
`--train_seed`, derived from (fold, seed, r) by `run_train_seed`, and no two
(fold, seed, r) share one: the pairs are independent draws of training's
randomness instead of sharing --seed's initialisation across folds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from i2a_tf.config import (Config, ConfigError, StudyConfig, config_to_dict, field_default,
                           leaf_fields, parse_variant_definitions)

# None: not a network run (fitted in the study's process).
BUILTIN_VARIANTS: dict[str, tuple[str, ...] | None] = {
    "logreg": None,
    "supervised": ("--nouse_translation", "--nouse_pseudo_labels",
                   "--nouse_consistency"),
    # The noise floor: supervised-only again on the same split and labeled
    # subset with independent training randomness. Its paired difference to
    # 'supervised' is what a change that does nothing reads.
    "supervised_reseeded": ("--nouse_translation", "--nouse_pseudo_labels",
                            "--nouse_consistency", "--train_seed=1000"),
    "pl_label_spreading": ("--nouse_translation", "--use_pseudo_labels",
                           "--propagation=label_spreading", "--nouse_consistency"),
    "pl_widest_path": ("--nouse_translation", "--use_pseudo_labels",
                       "--propagation=widest_path", "--nouse_consistency"),
    "pl_self_training": ("--nouse_translation", "--use_pseudo_labels",
                         "--propagation=self_training", "--nouse_consistency"),
    "translation": ("--use_translation", "--nouse_density_weights",
                    "--nouse_annealing", "--nouse_pseudo_labels",
                    "--nouse_consistency"),
    "translation_density": ("--use_translation", "--use_density_weights",
                            "--use_annealing", "--nouse_pseudo_labels",
                            "--nouse_consistency"),
    # The paper's method: its three components together.
    "full": ("--use_translation", "--use_density_weights", "--use_annealing",
             "--use_pseudo_labels", "--propagation=widest_path",
             "--nouse_consistency"),
    # Beyond the paper: FixMatch-style consistency alone, and with the rest.
    "consistency": ("--nouse_translation", "--nouse_pseudo_labels",
                    "--use_consistency"),
    "consistency_ema": ("--nouse_translation", "--nouse_pseudo_labels",
                        "--use_consistency", "--consistency_teacher=ema"),
    "full_consistency": ("--use_translation", "--use_density_weights",
                         "--use_annealing", "--use_pseudo_labels",
                         "--propagation=widest_path", "--use_consistency"),
}
LABELS = {
    "logreg": "logistic regression on log-mel statistics",
    "supervised": "supervised only (labeled clips)",
    "supervised_reseeded": "supervised only, another training seed (noise floor)",
    "pl_label_spreading": "+ pseudo-labels (label spreading)",
    "pl_widest_path": "+ pseudo-labels (widest path)",
    "translation": "+ translated faces (weight 1)",
    "translation_density": "+ translated faces, density weights, annealing",
    "full": "full method (the paper's three components)",
    "pl_self_training": "+ pseudo-labels (self-training, no graph)",
    "consistency": "+ consistency (FixMatch, distribution alignment)",
    "consistency_ema": "+ consistency, mean-teacher targets",
    "full_consistency": "full method + consistency",
}
BASELINE = "supervised"
QUICK_VARIANTS = ("logreg", "supervised", "full")

# Flags a cell sets itself, or that only change what is printed: they are not
# part of the study's shared flags (study.json) that a resumed study must match.
CELL_FLAGS = ("workdir", "test_fold", "seed", "label_fraction", "verbose")


def run_train_seed(fold: int, seed: int, run: int) -> int:
    """The --train_seed of training run `run` of the cells of (fold, seed): a
    hash, so that seeds of different (fold, seed, run) are unrelated, in
    [0, 2**31) (a valid Keras and stateless-op seed)."""
    digest = hashlib.sha256(f"i2a_tf study run/{fold}/{seed}/{run}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2 ** 31


@dataclasses.dataclass(frozen=True)
class Cell:
    fold: int
    seed: int
    budget: float
    variant: str
    # Training run of --study_train_seeds; -1: the one run whose training seed
    # is --seed (no --study_train_seeds).
    run: int = -1

    @property
    def records_key(self) -> str:
        """The folder of the prepared records this cell shares with its pairs."""
        return f"fold{self.fold}_seed{self.seed}_budget{self.budget:g}"

    @property
    def run_name(self) -> str:
        """The cell's folder inside its group: the variant, and its run."""
        return self.variant if self.run < 0 else f"{self.variant}_run{self.run}"

    @property
    def train_seed(self) -> int | None:
        """The --train_seed the study sets, or None (the cell's own flags decide)."""
        return None if self.run < 0 else run_train_seed(self.fold, self.seed, self.run)

    def describe(self) -> str:
        run = "" if self.run < 0 else f" run {self.run}"
        return (f"fold {self.fold} seed {self.seed} budget {100 * self.budget:g}% "
                f"{self.variant}{run}")


@dataclasses.dataclass(frozen=True)
class Grid:
    folds: tuple[int, ...]
    seeds: tuple[int, ...]
    budgets: tuple[float, ...]
    variants: tuple[str, ...]
    variant_flags: dict
    train_seeds: int = 0

    @property
    def runs(self) -> tuple[int, ...]:
        return tuple(range(self.train_seeds)) if self.train_seeds else (-1,)

    def cells(self) -> list[Cell]:
        """Every cell, grouped by prepared records (fold, seed, budget), the
        variants of one group in the given order, run by run. Seeds outside
        folds, so a study stopped early has every fold of its first seeds:
        paired differences over all speakers, not over a few. The logistic
        regression has no training randomness: one run whatever R."""
        return [Cell(f, s, b, v, r if self.variant_flags[v] is not None else -1)
                for b in self.budgets for s in self.seeds for f in self.folds
                for r in self.runs for v in self.variants
                if self.variant_flags[v] is not None or r == self.runs[0]]


def study_grid(config: Config) -> Grid:
    """The grid `config.study` asks for (`--study_quick` narrows it)."""
    study: StudyConfig = config.study
    if config.data.test_speakers:
        raise ConfigError(
            f"--test_speakers={','.join(config.data.test_speakers)}: a study picks "
            "the test speakers by --study_folds; leave --test_speakers empty")
    folds = study.folds
    bad = [f for f in folds if f >= config.data.num_folds]
    if bad:
        raise ConfigError(f"--study_folds={','.join(study.study_folds)}: fold {bad[0]} "
                          f"is not < --num_folds={config.data.num_folds}")
    flags = dict(BUILTIN_VARIANTS)
    flags.update(parse_variant_definitions(study.study_variant_flags))
    if study.study_quick:
        return Grid(folds[:1], study.seeds[:1], (0.1,), QUICK_VARIANTS, flags,
                    study.study_train_seeds)
    return Grid(folds, study.seeds, study.budgets, tuple(study.study_variants), flags,
                study.study_train_seeds)


def _flag_text(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (tuple, list)):
        return f"--{name}=" + ",".join(str(v) for v in value)
    return f"--{name}={value}"


def flags_added_since(before: list[str], now: list[str]) -> list[str] | None:
    """The flags of `now` that a study recorded with `before` lacks, when that
    is the only difference and each is a flag `before` does not name at all,
    at its default value (a flag added to the code later, which by convention
    defaults to the old behaviour); None when the two differ otherwise."""
    names = {}
    defaults = set()
    for _, field in leaf_fields():
        names[field.name] = field.name
        if field.type in ("bool", bool):
            names["no" + field.name] = field.name
        defaults.add(_flag_text(field.name, field_default(field)))

    def name(text):
        return names.get(text[2:].split("=", 1)[0], text)

    recorded, current = set(before), set(now)
    if not recorded <= current:
        return None
    added = [f for f in now if f not in recorded]
    named_before = {name(f) for f in before}
    if all(f in defaults and name(f) not in named_before for f in added):
        return added
    return None


def shared_flags(config: Config) -> list[str]:
    """Every configuration flag of the study's cells except the per-cell ones
    and the study's own: one `--name=value` per line of the cells' flagfile.

    Corpus folders are made absolute so a cell's flagfile works from anywhere.
    Op determinism is forced on: without it, paired differences are noise.
    """
    tree = config_to_dict(config)
    values = {}
    for section, field in leaf_fields():
        if section == "study" or field.name in CELL_FLAGS:
            continue
        value = tree[section][field.name] if section else tree[field.name]
        if field.name in ("speech_dir", "face_dir") and value:
            value = os.path.abspath(value)
        if field.name == "deterministic":
            value = True
        values[field.name] = value
    return [_flag_text(name, values[name]) for name in sorted(values)]
