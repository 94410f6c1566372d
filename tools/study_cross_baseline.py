"""Paired differences of a study's results.csv against a baseline other than
'supervised' (the study's own tables always compare with 'supervised').

  python tools/study_cross_baseline.py RESULTS_CSV VARIANT:BASELINE ... [--budget=0.1]
      [--also=OTHER_RESULTS_CSV ...] [--rename_also=OLD:NEW ...] [--run=R]

Per pair: mean Δ in points, 95 % percentile-bootstrap interval over the
(fold, seed) pairs, W/T/L, and pairs more than 3 points worse: the study's own
statistics (`i2a_tf.study.statistics`), each side the mean of its training runs;
for rows that keep their test confusion matrices, also the pooled UAR's Δ
(every test clip of the paired units, each by its own fold's model) with its
cluster-bootstrap interval.
E.g. docs/results/emodb_ckplus_speaker: full:supervised_global.

Across studies: `--also` adds another study's rows (the same folds, seeds and
--study_train_seeds derivation pair cell by cell); `--run=R` keeps training
run R only, for studies that ran different numbers of runs. A cell present in
two studies (a variant both ran) must have the same UAR in both, to the
digits results.csv keeps: the proof that the cells are comparable (same
splits, seeds and code path); the tool stops otherwise. `--rename_also`
renames a variant of the --also files, to pair two studies' variants of one
name (e.g. the full method with FER2013 faces against it with CK+48 faces:
`--rename_also=full:full_ckplus`, then `full:full_ckplus`).
"""

from __future__ import annotations

import argparse
import math
import sys

from i2a_tf.study import statistics


class MergeError(ValueError):
    """Two studies that cannot be paired, or a flag that names nothing."""


def merged_rows(paths: list[str], run: int | None, renames: dict[str, str]
                ) -> tuple[list[dict], int]:
    """The rows of every results.csv in `paths` (training run `run` only, when
    given; variants of the files after the first renamed by `renames`), a cell
    that two files hold kept once, and how many such shared cells agreed.

    Raises MergeError when two files disagree on a shared cell's UAR, give one
    (fold, seed, budget, run) disjoint training seeds, share no cell at all
    (nothing proves they are comparable), or a rename names no variant."""
    cells: dict[tuple, tuple[dict, str]] = {}
    # {(fold, seed, budget, run): {path: the --train_seeds of its cells}}
    seeds: dict[tuple, dict[str, set[int]]] = {}
    shared, renamed = 0, set()
    for number, path in enumerate(paths):
        for row in statistics.read_results_csv(path):
            if run is not None and row["run"] != run:
                continue
            name = row["variant"]
            if number and name in renames:
                row["variant"] = renames[name]
                renamed.add(name)
            fold, seed, budget, r = row["fold"], row["seed"], row["budget"], row["run"]
            where = f"fold {fold} seed {seed} budget {budget:g} run {r}"
            unit = (fold, seed, budget, r)
            if row["train_seed"] >= 0:  # -1: a logistic-regression row
                seeds.setdefault(unit, {}).setdefault(path, set()).add(row["train_seed"])
            key = (*unit, row["variant"])
            if key not in cells:
                cells[key] = (row, path)
                continue
            if cells[key][1] == path:
                raise MergeError(f"{name} {where}: twice in {path}")
            theirs = cells[key][0]["uar"]
            if theirs != row["uar"] and not (math.isnan(theirs) and math.isnan(row["uar"])):
                raise MergeError(
                    f"{name} {where}: UAR {theirs} in {cells[key][1]} but {row['uar']} "
                    f"in {path}; the studies are not comparable (pair two variants of "
                    "one name with --rename_also)")
            shared += 1
    for (fold, seed, budget, r), by_path in seeds.items():
        # Variants of one unit share its --train_seed (but a noise-floor
        # variant sets its own): two files must share at least one.
        (path, mine), *others = by_path.items()
        for other, theirs in others:
            if not mine & theirs:
                raise MergeError(
                    f"fold {fold} seed {seed} budget {budget:g} run {r}: --train_seed "
                    f"{sorted(mine)} in {path} but {sorted(theirs)} in {other}; the "
                    "studies are not comparable")
    unused = sorted(set(renames) - renamed)
    if unused:
        raise MergeError(f"--rename_also: no variant {', '.join(unused)} in "
                         f"{', '.join(paths[1:]) or '(no --also file)'}")
    if len(paths) > 1 and not shared:
        raise MergeError(f"{' and '.join(paths)} share no cell"
                         f"{f' of run {run}' if run is not None else ''}: nothing shows "
                         "they were trained alike (run a variant both studies ran, "
                         "e.g. supervised)")
    return [row for row, _ in cells.values()], shared


def _renames(pairs: list[str]) -> dict[str, str]:
    renames: dict[str, str] = {}
    for pair in pairs:
        old, _, new = pair.partition(":")
        if not old or not new or old in renames:
            raise MergeError(f"--rename_also={pair}: must be OLD:NEW, each OLD once")
        renames[old] = new
    return renames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results_csv")
    parser.add_argument("pairs", nargs="+", help="VARIANT:BASELINE")
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--also", action="append", default=[], metavar="RESULTS_CSV",
                        help="another study's results.csv to pair with")
    parser.add_argument("--rename_also", action="append", default=[], metavar="OLD:NEW",
                        help="rename a variant of the --also files")
    parser.add_argument("--run", type=int, default=None,
                        help="keep training run R only")
    args = parser.parse_args()
    paths = [args.results_csv, *args.also]
    try:
        rows, shared = merged_rows(paths, args.run, _renames(args.rename_also))
    except MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.also:
        print(f"{shared} cells shared by the studies agree to the last digit")
    for pair in args.pairs:
        variant, _, baseline = pair.partition(":")
        deltas = [d for _, _, d in statistics.paired_differences(
            rows, variant, args.budget, baseline)]
        if not baseline or not deltas:
            print(f"error: {pair}: no finished (fold, seed) pairs of VARIANT:BASELINE "
                  f"at budget {args.budget:g}"
                  f"{f', run {args.run}' if args.run is not None else ''} in "
                  f"{', '.join(paths)}", file=sys.stderr)
            return 2
        low, high = statistics.bootstrap_interval(deltas)
        wins, ties, losses = statistics.wins_ties_losses(deltas)
        worse = sum(d < -0.03 for d in deltas)
        print(f"{variant} - {baseline}: {100 * sum(deltas) / len(deltas):+.1f} "
              f"[{100 * low:+.1f}, {100 * high:+.1f}] {wins}/{ties}/{losses} over "
              f"{len(deltas)} pairs; >3 points worse: {worse}")
        try:
            pooled = statistics.pooled_comparison(rows, variant, args.budget, baseline)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if pooled is not None:  # rows that keep their confusion matrices
            print(f"  pooled over folds: {100 * pooled['delta']:+.1f} "
                  f"[{100 * pooled['delta_low']:+.1f}, {100 * pooled['delta_high']:+.1f}] "
                  f"over {pooled['units']} units ({variant} {100 * pooled['uar']:.1f}, "
                  f"{baseline} {100 * pooled['baseline_uar']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
