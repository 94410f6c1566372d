"""The study's numbers: results.csv and the tables of results.md.

A cell is one (fold, seed, budget, variant). The question a study answers is
whether a variant beats `supervised` trained on exactly the same records, so
the headline is the *paired* difference: for each (fold, seed, budget) that has
both, Δ = UAR(variant) - UAR(supervised). Folds move UAR by ~25 points and
seeds by ~10, so the unpaired means of two variants say little; the paired
differences remove what the two runs share.

  - mean ± std: over the (fold, seed) units of one (budget, variant), std
    with ddof=1; a unit's value is the mean of its training runs (one run
    unless --study_train_seeds);
  - 95 % interval of the mean Δ: percentile bootstrap over the pairs (10,000
    resamples with replacement, seeded, so the table is reproducible). With
    --study_train_seeds a pair's Δ is the mean of its variant's runs minus the
    mean of its baseline's, and each (fold, seed) has training seeds of its
    own, so the pairs are independent and their spread already holds the
    training-seed spread (resampling the runs again within a pair would count
    it twice: the first stage of a two-stage design is what is resampled);
  - noise floor (two or more runs of supervised per unit): Δ of supervised's
    run 1 against its run 0, what a change that does nothing reads from one
    run per side, and the training-seed sd of one unit;
  - wins / ties / losses: pairs with Δ above +TIE_POINTS, within ±TIE_POINTS,
    below -TIE_POINTS (UAR points);
  - pooled UAR (test UAR only, cells whose results.csv row has its confusion
    matrix): the UAR of the summed confusion matrices of the (fold, seed)
    units, i.e. of every test clip, each predicted by its own fold's model,
    as leave-speakers-out SER usually reports it. A fold's UAR weighs a class
    of one test clip as much as a class of sixteen, so one clip can move it
    by 20 points; pooled, every class has all its clips. Its Δ is pooled
    UAR(variant) - pooled UAR(supervised) over the paired units; its interval
    resamples the units (a cluster bootstrap, the same resamples as the
    per-pair interval when both have the same units) and pools each
    resample's matrices. Where supervised has units the variant lacks, the
    variant's row also gives supervised's pooled UAR over the shared units.

UARs are fractions in the rows and CSV, points (x 100) in the tables.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Iterable, Sequence

import numpy as np

RESULT_COLUMNS = ("fold", "seed", "budget", "variant", "run", "train_seed", "uar",
                  "val_uar", "wa", "macro_f1",
                  "pseudo_label_accuracy", "pseudo_label_coverage",
                  "mean_density_weight", "translated_accuracy", "admitted_fraction",
                  "judge_admitted_fraction", "translation_spread", "seconds",
                  "confusion")
BASELINE = "supervised"
# What a study compares (--study_metric): the test speakers' UAR, or the
# validation speakers' UAR at the last epoch (development: choices made on it
# never see the test speakers).
METRIC_NAMES = {"uar": "test UAR", "val_uar": "validation UAR (last epoch)"}
TIE_POINTS = 0.5
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


def write_results_csv(rows: Sequence[dict], path: str) -> None:
    """One line per finished cell, columns RESULT_COLUMNS; NaN as empty."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(row.get(key)) for key in RESULT_COLUMNS})


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def read_results_csv(path: str) -> list[dict]:
    """The rows `write_results_csv` wrote (numbers back as int/float, empty as NaN)."""
    integers = {"fold", "seed", "run", "train_seed"}
    with open(path, encoding="utf-8", newline="") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if key in ("variant", "confusion"):
                    row[key] = value
                elif key in integers:
                    if value != "":  # run / train_seed: absent from older tables
                        row[key] = int(value)
                else:
                    row[key] = float(value) if value != "" else float("nan")
            row.setdefault("run", 0)  # written before training runs were a column
            row.setdefault("train_seed", -1)
            row.setdefault("translation_spread", float("nan"))  # a later column
            row.setdefault("confusion", "")  # a later column
            row.setdefault("admitted_fraction", float("nan"))  # a later column
            row.setdefault("judge_admitted_fraction", float("nan"))  # a later column
            rows.append(row)
    return rows


def confusion_text(matrix) -> str:
    """A confusion matrix (rows: true class, columns: predicted) as results.csv
    keeps it: rows joined by ';', counts by ' '."""
    return ";".join(" ".join(str(int(v)) for v in row) for row in matrix)


def parse_confusion(text) -> np.ndarray | None:
    """The matrix `confusion_text` wrote, or None for an empty cell (a row
    written before the column existed). ValueError names a malformed one."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        matrix = np.asarray([[int(v) for v in row.split()] for row in text.split(";")],
                            np.int64)
    except ValueError as error:  # ragged rows or a non-integer count
        raise ValueError(f"confusion {text!r} is not a matrix of counts: {error}") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or (matrix < 0).any():
        raise ValueError(f"confusion {text!r} is not a square matrix of counts")
    return matrix


def pooled_uar(confusion: np.ndarray) -> np.ndarray | float:
    """UAR of a confusion matrix [..., C, C] (rows: true class): the mean
    recall over the classes with test clips, as `classification_metrics`
    computes a fold's; NaN with no clip."""
    confusion = np.asarray(confusion, np.float64)
    support = confusion.sum(axis=-1)
    present = support > 0
    recall = np.diagonal(confusion, axis1=-2, axis2=-1) / np.maximum(support, 1e-300)
    count = present.sum(axis=-1)
    total = np.where(present, recall, 0.0).sum(axis=-1)
    out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(out) if out.ndim == 0 else out


def _row_confusion(row: dict) -> np.ndarray | None:
    """parse_confusion of a results row, an error naming the cell."""
    try:
        return parse_confusion(row.get("confusion"))
    except ValueError as error:
        raise ValueError(f"results row of fold {row['fold']} seed {row['seed']} budget "
                         f"{row['budget']:g} variant {row['variant']}: {error}") from None


def unit_confusions(rows: Iterable[dict], budget: float
                    ) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """{(fold, seed): {variant: confusion matrix, the mean over the unit's
    training runs}} at `budget`, for the variants whose every run there has
    one (so each unit weighs the same, whatever its number of runs).
    ValueError when the matrices at `budget` differ in size (cells of
    different class lists cannot be pooled)."""
    runs: dict[tuple[int, int], dict[str, list]] = {}
    shapes: dict[tuple, str] = {}
    for row in rows:
        if row["budget"] == budget:
            matrix = _row_confusion(row)
            if matrix is not None:
                shapes.setdefault(matrix.shape, f"fold {row['fold']} seed {row['seed']} "
                                  f"variant {row['variant']}")
            runs.setdefault((row["fold"], row["seed"]), {}).setdefault(
                row["variant"], []).append(matrix)
    if len(shapes) > 1:
        raise ValueError(f"confusion matrices of different sizes at budget {budget:g} ("
                         + ", ".join(f"{a}x{b} at {where}" for (a, b), where in shapes.items())
                         + "): cells with different class lists cannot be pooled")
    return {key: {variant: np.mean(matrices, axis=0)
                  for variant, matrices in by_variant.items()
                  if all(m is not None for m in matrices)}
            for key, by_variant in runs.items()}


def pooled_comparison(rows: Iterable[dict], variant: str, budget: float,
                      baseline: str = BASELINE, confidence: float = CONFIDENCE,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                      ) -> dict | None:
    """Pooled UAR of `variant` and `baseline` over the (fold, seed) units
    where both have confusion matrices, their difference, its cluster
    bootstrap interval (units resampled as `bootstrap_interval` resamples
    pairs, each resample's matrices summed) and the difference per seed
    (pooled over that seed's folds). None without such a unit."""
    units = [(key, by_variant[variant], by_variant[baseline])
             for key, by_variant in sorted(unit_confusions(rows, budget).items())
             if variant in by_variant and baseline in by_variant]
    if not units:
        return None
    mine = np.stack([m for _, m, _ in units])
    theirs = np.stack([t for _, _, t in units])
    delta = pooled_uar(mine.sum(0)) - pooled_uar(theirs.sum(0))
    if len(units) > 1:
        picks = _resample_indices(len(units), resamples, seed)
        counts = np.zeros((resamples, len(units)))
        np.add.at(counts, (np.arange(resamples)[:, None], picks), 1.0)
        deltas = (pooled_uar(np.einsum("rn,nij->rij", counts, mine))
                  - pooled_uar(np.einsum("rn,nij->rij", counts, theirs)))
        low, high = _percentile_interval(deltas, confidence)
    else:
        low = high = delta
    per_seed = {}
    for seed_value in sorted({key[1] for key, _, _ in units}):
        picked = [i for i, (key, _, _) in enumerate(units) if key[1] == seed_value]
        per_seed[seed_value] = (pooled_uar(mine[picked].sum(0))
                                - pooled_uar(theirs[picked].sum(0)))
    return {"units": len(units), "uar": pooled_uar(mine.sum(0)),
            "baseline_uar": pooled_uar(theirs.sum(0)), "delta": float(delta),
            "delta_low": float(low), "delta_high": float(high), "per_seed": per_seed}


def class_supports(rows: Iterable[dict], budget: float) -> dict[int, np.ndarray]:
    """{fold: test clips per class} at `budget`, from the rows' confusion
    matrices (their row sums), for the folds where every row agrees."""
    seen: dict[int, set] = {}
    for row in rows:
        matrix = _row_confusion(row) if row["budget"] == budget else None
        if matrix is not None:
            seen.setdefault(row["fold"], set()).add(tuple(int(v) for v in matrix.sum(1)))
    return {fold: np.asarray(next(iter(supports)))
            for fold, supports in sorted(seen.items()) if len(supports) == 1}


def unit_values(rows: Iterable[dict], budget: float, metric: str = "uar"
                ) -> dict[tuple[int, int], dict[str, list[float]]]:
    """{(fold, seed): {variant: [metric of each training run, by run]}} at
    `budget`."""
    runs: dict[tuple[int, int], dict[str, list[tuple[int, float]]]] = {}
    for row in rows:
        if row["budget"] == budget:
            runs.setdefault((row["fold"], row["seed"]), {}).setdefault(
                row["variant"], []).append((row.get("run", 0), row[metric]))
    return {key: {variant: [v for _, v in sorted(values)]
                  for variant, values in by_variant.items()}
            for key, by_variant in runs.items()}


def unit_means(rows: Iterable[dict], budget: float, metric: str = "uar"
               ) -> dict[tuple[int, int, str], float]:
    """{(fold, seed, variant): mean of metric over the unit's training runs}."""
    return {(fold, seed, variant): float(np.mean(values))
            for (fold, seed), by_variant in unit_values(rows, budget, metric).items()
            for variant, values in by_variant.items()}


def paired_runs(rows: Iterable[dict], variant: str, budget: float,
                baseline: str = BASELINE, metric: str = "uar"
                ) -> list[tuple[int, int, list[float], list[float]]]:
    """[(fold, seed, variant's runs, baseline's runs)] at `budget`, for every
    (fold, seed) where both have finished runs with a value (a metric a cell
    does not have, NaN, is left out), sorted by (fold, seed)."""
    out = []
    for (fold, seed), values in sorted(unit_values(rows, budget, metric).items()):
        mine, theirs = ([v for v in values.get(name, []) if not math.isnan(v)]
                        for name in (variant, baseline))
        if mine and theirs:
            out.append((fold, seed, mine, theirs))
    return out


def paired_differences(rows: Iterable[dict], variant: str, budget: float,
                       baseline: str = BASELINE, metric: str = "uar"
                       ) -> list[tuple[int, int, float]]:
    """[(fold, seed, metric(variant) - metric(baseline))] at `budget`, for every
    (fold, seed) where both cells finished, sorted by (fold, seed); each side
    is the mean of its training runs."""
    return [(fold, seed, float(np.mean(mine) - np.mean(theirs)))
            for fold, seed, mine, theirs in paired_runs(rows, variant, budget,
                                                         baseline, metric)]


def noise_floor(rows: Iterable[dict], budget: float, baseline: str = BASELINE,
                metric: str = "uar") -> dict | None:
    """What reseeding reads, from the baseline's own runs at `budget`: over
    the units with >= 2 runs, Δ = run 1 - run 0 (mean, bootstrap interval,
    W/T/L, count beyond ±3 points) and the training-seed sd of one run (the
    root of the mean over units of the variance of its runs, ddof=1). None
    with fewer than 2 such units."""
    units = [runs for runs in ([v for v in values.get(baseline, []) if not math.isnan(v)]
                               for values in unit_values(rows, budget, metric).values())
             if len(runs) >= 2]
    if len(units) < 2:
        return None
    deltas = [runs[1] - runs[0] for runs in units]
    low, high = bootstrap_interval(deltas)
    wins, ties, losses = wins_ties_losses(deltas)
    return {"pairs": len(deltas), "delta": float(np.mean(deltas)), "delta_low": low,
            "delta_high": high, "wins": wins, "ties": ties, "losses": losses,
            "beyond_3": int(np.sum(np.abs(100.0 * np.asarray(deltas)) > 3.0)),
            "run_sd": float(np.sqrt(np.mean([np.var(r, ddof=1) for r in units])))}


def bootstrap_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`.

    Draws `resamples` samples of len(values) with replacement (NumPy's
    Generator seeded with `seed`) and returns the (1-c)/2 and (1+c)/2
    quantiles of their means. One value gives (v, v); none gives (nan, nan).
    With few pairs the interval is narrow for what it is (the bootstrap cannot
    see beyond the values it has): with 2 values it is at most [min, max].
    """
    values = np.asarray(values, np.float64)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), float(values[0])
    means = values[_resample_indices(values.size, resamples, seed)].mean(axis=1)
    return _percentile_interval(means, confidence)


def _resample_indices(size: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, size] indices drawn with replacement: the resamples of
    every bootstrap here (the paired and the pooled intervals share them)."""
    return np.random.default_rng(seed).integers(0, size, size=(resamples, size))


def _percentile_interval(statistics_: np.ndarray, confidence: float) -> tuple[float, float]:
    """The (1-c)/2 and (1+c)/2 quantiles of resampled statistics."""
    low, high = np.quantile(statistics_, [(1.0 - confidence) / 2.0,
                                          (1.0 + confidence) / 2.0])
    return float(low), float(high)


def wins_ties_losses(deltas: Sequence[float], tie_points: float = TIE_POINTS
                     ) -> tuple[int, int, int]:
    """Counts of Δ > +tie, |Δ| <= tie, Δ < -tie; Δ are UAR fractions, the tie
    band is in points."""
    deltas = 100.0 * np.asarray(deltas, np.float64)
    wins = int(np.sum(deltas > tie_points))
    losses = int(np.sum(deltas < -tie_points))
    return wins, len(deltas) - wins - losses, losses


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray([v for v in values if not math.isnan(v)], np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    return float(values.mean()), std


def table_order(variants: Sequence[str]) -> list[str]:
    """supervised first, logreg second, the rest in the order given."""
    first = [v for v in (BASELINE, "logreg") if v in variants]
    return first + [v for v in variants if v not in first]


def summary(rows: Sequence[dict], variants: Sequence[str], metric: str = "uar"
            ) -> list[dict]:
    """Per budget (ascending) and variant (`table_order`): n (cells, i.e.
    training runs), units, means over units, and the paired comparison of
    `metric` with supervised (absent for supervised itself). entry["uar"] is
    `metric` (test UAR by default)."""
    out = []
    budgets = sorted({row["budget"] for row in rows})
    keys = ("uar", "wa", "macro_f1", "pseudo_label_accuracy", "pseudo_label_coverage",
            "mean_density_weight", "translated_accuracy", "judge_admitted_fraction",
            "admitted_fraction", "translation_spread", "seconds")
    for budget in budgets:
        means = {key: unit_means(rows, budget, metric if key == "uar" else key)
                 for key in keys}
        for variant in table_order(variants):
            cells = [r for r in rows if r["budget"] == budget and r["variant"] == variant]
            if not cells:
                continue
            entry = {"budget": budget, "variant": variant, "n": len(cells),
                     "units": len({(r["fold"], r["seed"]) for r in cells})}
            for key in keys:
                entry[key], entry[key + "_std"] = _mean_std(
                    [v for (_, _, name), v in means[key].items() if name == variant])
            if variant != BASELINE:
                deltas = [d for _, _, d in
                          paired_differences(rows, variant, budget, metric=metric)]
                entry["pairs"] = len(deltas)
                entry["delta"] = float(np.mean(deltas)) if deltas else float("nan")
                entry["delta_low"], entry["delta_high"] = bootstrap_interval(deltas)
                entry["wins"], entry["ties"], entry["losses"] = wins_ties_losses(deltas)
            else:
                entry["noise_floor"] = noise_floor(rows, budget, metric=metric)
            out.append(entry)
    return out


def verdict(entry: dict) -> str:
    """What the paired interval says about a variant against supervised."""
    if entry.get("pairs", 0) < 2:
        return "too few pairs to say"
    if entry["delta_low"] > 0:
        return "better than supervised (interval above 0)"
    if entry["delta_high"] < 0:
        return "worse than supervised (interval below 0)"
    return "no difference resolved (interval spans 0)"


def _points(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{100.0 * value:.{digits}f}"


def _plain(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2g}"


def results_markdown(rows: Sequence[dict], variants: Sequence[str],
                     labels: dict[str, str] | None = None,
                     header_lines: Sequence[str] = (), metric: str = "uar",
                     class_names: Sequence[str] = ()) -> str:
    """results.md: per budget, one row per variant (supervised first, logreg
    second): UAR mean ± std, the paired Δ to supervised with its 95 %
    bootstrap interval and W/T/L, then WA, macro-F1 and the diagnostics; then
    each variant's Δ per (fold, seed); with confusion matrices in the rows
    (test UAR), the pooled UAR and the test clips per class of each fold."""
    labels = labels or {}
    lines = ["# Study results", ""]
    lines += [f"{line}  " for line in header_lines]
    lines += ["", f"UAR, WA and macro-F1 in points (mean ± std over folds × seeds). "
              f"Δ: paired difference to supervised-only on the same (fold, seed, "
              f"budget), mean and {int(100 * CONFIDENCE)} % percentile-bootstrap "
              f"interval ({BOOTSTRAP_RESAMPLES:,} resamples); W/T/L: pairs above, "
              f"within, below ±{TIE_POINTS:g} points. PL: pseudo-label accuracy "
              "and coverage of the unlabeled clips at the last refresh; w̄: mean "
              "density weight of the translated samples and translated accuracy "
              "(C on G's output), both from the last epoch; judged: the share of "
              "translated samples the frozen judge calls their class with enough "
              "confidence, admitted: the share that entered C's loss (the judge and "
              "the density threshold both passed), each the mean over the epochs "
              "after warm-up; "
              "spread: within-class "
              "spread of G's translations over that of real clips (1: as varied "
              "as speech, ~0: one output per class whatever the face).", ""]
    if metric != "uar":
        lines += [f"**Compared by {METRIC_NAMES[metric]}** (--study_metric={metric}): "
                  "the UAR column and every Δ are on the validation speakers, "
                  "which are neither trained on nor the test speakers; WA and "
                  "macro-F1, test-speaker figures, are not shown.", ""]
    if any(row.get("run", 0) > 0 for row in rows):
        lines += ["Several training runs per (fold, seed) (--study_train_seeds), "
                  "each with its own --train_seed, shared by the variants of that "
                  "(fold, seed) and by no other: n counts runs, a (fold, seed)'s "
                  "value is the mean of its runs, mean ± std are over (fold, seed), "
                  "and the pairs are independent, so the interval over them "
                  "includes the training-seed spread. The noise floor under each table is "
                  "supervised-only's run 1 against its run 0: what a change that "
                  "does nothing reads, one run per side.", ""]
    if not rows:
        return "\n".join(lines + ["No cell has finished yet.", ""])
    entries = summary(rows, variants, metric)
    test_shown, nan = metric == "uar", float("nan")
    for budget in sorted({e["budget"] for e in entries}):
        lines += [f"## Budget {100 * budget:g} % labeled", "",
                  "| variant | n | UAR | Δ vs supervised [95 % CI] | W/T/L | WA | "
                  "macro-F1 | PL acc | PL cov | w̄ | transl. acc | judged | admitted | "
                  "spread | s / cell |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        notes = []
        for e in (e for e in entries if e["budget"] == budget):
            name = labels.get(e["variant"], e["variant"])
            if e["variant"] == BASELINE:
                delta, wtl = "(reference)", ""
            else:
                delta = (f"{100 * e['delta']:+.1f} [{100 * e['delta_low']:+.1f}, "
                         f"{100 * e['delta_high']:+.1f}]")
                wtl = f"{e['wins']}/{e['ties']}/{e['losses']}"
                notes.append(f"- **{name}**: {delta} points over {e['pairs']} pairs: "
                             f"{verdict(e)}.")
            lines.append(
                f"| {name} | {e['n']} | {_points(e['uar'])} ± {_points(e['uar_std'])} | "
                f"{delta} | {wtl} | {_points(e['wa'] if test_shown else nan)} | "
                f"{_points(e['macro_f1'] if test_shown else nan)} | "
                f"{_points(e['pseudo_label_accuracy'], 0)} | "
                f"{_points(e['pseudo_label_coverage'], 0)} | "
                f"{_plain(e['mean_density_weight'])} | "
                f"{_points(e['translated_accuracy'], 0)} | "
                f"{_points(e['judge_admitted_fraction'])} | "
                f"{_points(e['admitted_fraction'])} | "
                f"{_plain(e['translation_spread'])} | {e['seconds']:.0f} |")
        for e in entries:
            floor = e.get("noise_floor") if e["budget"] == budget else None
            if floor:
                notes.append(
                    f"- **Noise floor** (supervised-only, run 1 - run 0, over "
                    f"{floor['pairs']} pairs): {100 * floor['delta']:+.1f} "
                    f"[{100 * floor['delta_low']:+.1f}, {100 * floor['delta_high']:+.1f}], "
                    f"W/T/L {floor['wins']}/{floor['ties']}/{floor['losses']}, "
                    f"{floor['beyond_3']} pairs beyond ±3 points; training-seed sd "
                    f"of one run: {100 * floor['run_sd']:.1f} points.")
        lines += [""] + notes + [""]
        if test_shown:
            lines += _pooled_table(rows, variants, budget, labels, class_names)
        lines += _per_pair_table(rows, variants, budget, labels, metric)
    return "\n".join(lines)


def _pooled_table(rows, variants, budget, labels, class_names=()) -> list[str]:
    """The pooled UAR of every variant and its Δ, then the test clips per
    class of each fold; nothing without supervised's confusion matrices."""
    order = table_order(variants)
    units = unit_confusions(rows, budget)
    base = [by[BASELINE] for _, by in sorted(units.items()) if BASELINE in by]
    if not base:
        return []
    lines = [f"### Pooled over folds (budget {100 * budget:g} %)", "",
             "UAR of all test clips of the (fold, seed) units, each clip predicted by "
             "its own fold's model (the units' confusion matrices summed): every "
             "class counts all its clips, where a fold's UAR can hang on one. Δ: "
             "pooled UAR of the variant minus supervised's over the units both "
             "have; interval: the units resampled (cluster bootstrap); per seed: "
             "the Δ pooled over that seed's folds.", "",
             "| variant | units | pooled UAR | Δ vs supervised [95 % CI] | Δ per seed |",
             "|---|---|---|---|---|",
             f"| {labels.get(BASELINE, BASELINE)} | {len(base)} | "
             f"{_points(pooled_uar(np.sum(base, axis=0)))} | (reference) | |"]
    for variant in (v for v in order if v != BASELINE):
        c = pooled_comparison(rows, variant, budget)
        if c is None:
            continue
        seeds = ", ".join(f"seed {s} {100 * d:+.1f}" for s, d in c["per_seed"].items())
        shared = ("" if c["units"] == len(base) else
                  f" (supervised {_points(c['baseline_uar'])} on these units)")
        lines.append(f"| {labels.get(variant, variant)} | {c['units']} | "
                     f"{_points(c['uar'])}{shared} | {100 * c['delta']:+.1f} "
                     f"[{100 * c['delta_low']:+.1f}, {100 * c['delta_high']:+.1f}] | "
                     f"{seeds} |")
    supports = class_supports(rows, budget)
    if supports:
        width = len(next(iter(supports.values())))
        names = (list(class_names) if len(class_names) == width
                 else [f"class {i}" for i in range(width)])
        lines += ["", "Test clips per class in each fold (one clip of a class with "
                  "n clips moves that fold's UAR by 100 / (k n) points, k the fold's "
                  "classes with clips):", "",
                  "| fold | " + " | ".join(names) + " |",
                  "|---|" + "---|" * width]
        lines += [f"| {fold} | " + " | ".join(str(int(v)) for v in support) + " |"
                  for fold, support in supports.items()]
    return lines + [""]


def _per_pair_table(rows, variants, budget, labels, metric="uar") -> list[str]:
    """UAR of supervised and Δ of every other variant per (fold, seed)."""
    order = table_order(variants)
    if BASELINE not in order:
        return []
    others = [v for v in order if v != BASELINE]
    uar = unit_means(rows, budget, metric)
    keys = sorted({(f, s) for f, s, v in uar if v == BASELINE})
    lines = [f"### Per fold and seed (budget {100 * budget:g} %): supervised UAR, "
             "the others as Δ", "",
             "| fold | seed | " + " | ".join(labels.get(v, v) for v in order) + " |",
             "|---|---|" + "---|" * len(order)]
    for fold, seed in keys:
        base = uar[(fold, seed, BASELINE)]
        cells = [_points(base)]
        for v in others:
            value = uar.get((fold, seed, v))
            cells.append("–" if value is None else f"{100 * (value - base):+.1f}")
        lines.append(f"| {fold} | {seed} | " + " | ".join(cells) + " |")
    return lines + [""]
