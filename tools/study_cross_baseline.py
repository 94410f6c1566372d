"""Paired differences of a study's results.csv against a baseline other than
'supervised' (the study's own tables always compare with 'supervised').

  python tools/study_cross_baseline.py RESULTS_CSV VARIANT:BASELINE ... [--budget=0.1]
      [--also=OTHER_RESULTS_CSV ...] [--rename_also=OLD:NEW ...] [--run=R]

Per pair: mean Δ in points, 95 % percentile-bootstrap interval over the
(fold, seed) pairs, W/T/L, and pairs more than 3 points worse: the study's own
statistics (`i2a_tf.study.statistics`), each side the mean of its training runs.
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
import sys

from i2a_tf.study import statistics


def merged_rows(paths: list[str], run: int | None, renames: dict[str, str]
                ) -> tuple[list[dict], str | None]:
    """The rows of every results.csv in `paths` (training run `run` only, when
    given; variants of the files after the first renamed by `renames`), a cell
    that two files hold kept once; (rows, None), or ([], why) when two files
    disagree on a cell."""
    cells: dict[tuple, tuple[dict, str]] = {}
    for number, path in enumerate(paths):
        for row in statistics.read_results_csv(path):
            if run is not None and row["run"] != run:
                continue
            if number:
                row["variant"] = renames.get(row["variant"], row["variant"])
            key = (row["fold"], row["seed"], row["budget"], row["variant"], row["run"])
            if key in cells and cells[key][0]["uar"] != row["uar"]:
                fold, seed, budget, variant, r = key
                return [], (f"{variant} fold {fold} seed {seed} budget {budget:g} run {r}: "
                            f"UAR {cells[key][0]['uar']} in {cells[key][1]} but "
                            f"{row['uar']} in {path}; the studies are not comparable")
            cells.setdefault(key, (row, path))
    return [row for row, _ in cells.values()], None


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
    renames = dict(pair.partition(":")[::2] for pair in args.rename_also)
    if any(not old or not new for old, new in renames.items()):
        print(f"error: --rename_also={args.rename_also}: each must be OLD:NEW",
              file=sys.stderr)
        return 2
    rows, error = merged_rows([args.results_csv, *args.also], args.run, renames)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for pair in args.pairs:
        variant, _, baseline = pair.partition(":")
        deltas = [d for _, _, d in statistics.paired_differences(
            rows, variant, args.budget, baseline)]
        if not baseline or not deltas:
            print(f"error: {pair}: no finished (fold, seed) pairs of VARIANT:BASELINE "
                  f"at budget {args.budget:g} in {args.results_csv}", file=sys.stderr)
            return 2
        low, high = statistics.bootstrap_interval(deltas)
        wins, ties, losses = statistics.wins_ties_losses(deltas)
        worse = sum(d < -0.03 for d in deltas)
        print(f"{variant} - {baseline}: {100 * sum(deltas) / len(deltas):+.1f} "
              f"[{100 * low:+.1f}, {100 * high:+.1f}] {wins}/{ties}/{losses} over "
              f"{len(deltas)} pairs; >3 points worse: {worse}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
