"""Paired differences of a study's results.csv against a baseline other than
'supervised' (the study's own tables always compare with 'supervised').

  python tools/study_cross_baseline.py RESULTS_CSV VARIANT:BASELINE ... [--budget=0.1]

Per pair: mean Δ in points, 95 % percentile-bootstrap interval over the
(fold, seed) pairs, W/T/L, and pairs more than 3 points worse: the study's own
statistics (`i2a_tf.study.statistics`), each side the mean of its training runs.
E.g. docs/results/emodb_ckplus_speaker: full:supervised_global.
"""

from __future__ import annotations

import argparse
import sys

from i2a_tf.study import statistics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results_csv")
    parser.add_argument("pairs", nargs="+", help="VARIANT:BASELINE")
    parser.add_argument("--budget", type=float, default=0.1)
    args = parser.parse_args()
    rows = statistics.read_results_csv(args.results_csv)
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
