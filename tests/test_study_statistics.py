"""The study's paired statistics against hand-computed examples, and the
report's page and plots on a tiny made-up table (no training)."""

import itertools
import math
import os

import numpy as np
import pytest

from i2a_tf.study import report, results, statistics

NAN = float("nan")


def _row(fold, seed, variant, uar, budget=0.1, **extra):
    row = {"fold": fold, "seed": seed, "budget": budget, "variant": variant,
           "run": 0, "train_seed": seed, "uar": uar, "val_uar": NAN, "wa": uar + 0.01, "macro_f1": uar - 0.01,
           "pseudo_label_accuracy": NAN, "pseudo_label_coverage": NAN,
           "mean_density_weight": NAN, "translated_accuracy": NAN,
           "translation_spread": NAN, "seconds": 10.0, "confusion": "",
           "admitted_fraction": NAN, "judge_admitted_fraction": NAN}
    row.update(extra)
    return row


# supervised 0.50 / 0.40, full 0.56 / 0.38 (Δ +6 and -2 points), logreg 0.45 twice.
ROWS = [_row(0, 0, "supervised", 0.50), _row(1, 0, "supervised", 0.40),
        _row(0, 0, "full", 0.56, pseudo_label_accuracy=0.6, pseudo_label_coverage=0.2,
             mean_density_weight=0.25, translated_accuracy=0.3, translation_spread=0.1,
             admitted_fraction=0.01, judge_admitted_fraction=0.5),
        _row(1, 0, "full", 0.38, pseudo_label_accuracy=0.4, pseudo_label_coverage=0.4,
             mean_density_weight=0.75, translated_accuracy=0.5, translation_spread=0.3,
             admitted_fraction=0.04, judge_admitted_fraction=0.3),
        _row(0, 0, "logreg", 0.45), _row(1, 0, "logreg", 0.45)]


def test_paired_differences_pair_by_fold_and_seed_only():
    rows = ROWS + [_row(2, 0, "full", 0.9),  # no supervised partner: left out
                   _row(0, 0, "supervised", 0.1, budget=0.2)]  # other budget
    pairs = statistics.paired_differences(rows, "full", 0.1)
    assert [(f, s) for f, s, _ in pairs] == [(0, 0), (1, 0)]
    np.testing.assert_allclose([d for _, _, d in pairs], [0.06, -0.02])


def test_bootstrap_of_two_values_is_their_range():
    # Resampled means of (+6, -2): -2 (1/4), +2 (1/2), +6 (1/4): the 2.5 % and
    # 97.5 % quantiles are the extremes.
    low, high = statistics.bootstrap_interval([0.06, -0.02])
    assert (low, high) == pytest.approx((-0.02, 0.06))
    assert statistics.bootstrap_interval([0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in statistics.bootstrap_interval([]))
    with pytest.raises(ValueError, match="confidence"):
        statistics.bootstrap_interval([1.0, 2.0], confidence=1.5)


def test_bootstrap_matches_the_exact_resampling_distribution():
    values = np.array([0.0, 1.0, 2.0, 10.0])
    means = np.array([np.mean(values[list(p)])  # all 256 equally likely resamples
                      for p in itertools.product(range(4), repeat=4)])
    exact = np.quantile(means, [0.025, 0.975], method="inverted_cdf")
    assert statistics.bootstrap_interval(values, resamples=40_000) == \
        pytest.approx(tuple(exact), abs=0.26)  # the means lie on a 0.25 grid
    assert statistics.bootstrap_interval(values) == statistics.bootstrap_interval(values)


def test_wins_ties_losses_use_a_half_point_band():
    assert statistics.wins_ties_losses([0.06, -0.02, 0.004, -0.005, 0.0051]) == (2, 2, 1)


def test_summary_and_markdown_hand_computed():
    entries = {e["variant"]: e for e in statistics.summary(ROWS, ["full", "logreg", "supervised"])}
    assert entries["supervised"]["uar"] == pytest.approx(0.45)
    assert entries["supervised"]["uar_std"] == pytest.approx(math.sqrt(0.005))  # ddof=1
    assert "delta" not in entries["supervised"]
    full = entries["full"]
    assert (full["delta"], full["delta_low"], full["delta_high"]) == \
        pytest.approx((0.02, -0.02, 0.06))
    assert (full["wins"], full["ties"], full["losses"]) == (1, 0, 1)
    assert full["mean_density_weight"] == pytest.approx(0.5)
    assert statistics.verdict(full) == "no difference resolved (interval spans 0)"
    assert statistics.verdict({**full, "delta_low": 0.01}).startswith("better")
    assert statistics.verdict({**full, "delta_high": -0.01}).startswith("worse")

    text = statistics.results_markdown(ROWS, ["full", "logreg", "supervised"],
                                       labels={"full": "full method"},
                                       header_lines=["Command: `x`"])
    table = [line for line in text.splitlines() if line.startswith("| ")
             and not line.startswith("| variant") and not line.startswith("| fold")]
    assert table[0].startswith("| supervised | 2 | 45.0 ± 7.1 | (reference)")
    assert table[1].startswith("| logreg | 2 | 45.0 ± 0.0 | +0.0 [-5.0, +5.0] | 1/0/1")
    assert table[2].startswith("| full method | 2 | 47.0 ± 12.7 | +2.0 [-2.0, +6.0] | 1/0/1")
    # PL acc, PL cov, w̄, translated accuracy, judged, admitted, spread: means
    # over the two cells.
    assert table[2].endswith("| 50 | 30 | 0.5 | 40 | 40.0 | 2.5 | 0.2 | 10 |")
    assert table[0].endswith("| – | – | – | – | – | – | – | 10 |")
    assert "| 0 | 0 | 50.0 | -5.0 | +6.0 |" in text  # per-pair: logreg, then full
    assert "Command: `x`" in text
    assert "No cell has finished" in statistics.results_markdown([], ["supervised"])


def test_results_csv_round_trip(tmp_path):
    path = str(tmp_path / "results.csv")
    statistics.write_results_csv(ROWS, path)
    with open(path, encoding="utf-8") as f:
        assert f.readline().strip() == ",".join(statistics.RESULT_COLUMNS)
    back = statistics.read_results_csv(path)
    assert len(back) == len(ROWS)
    for got, want in zip(back, ROWS):
        for key in statistics.RESULT_COLUMNS:
            if isinstance(want[key], float) and math.isnan(want[key]):
                assert math.isnan(got[key])
            else:
                assert got[key] == pytest.approx(want[key])


def test_markdown_to_html_tables_lists_and_escaping():
    page = report.markdown_to_html(
        "# Title\n\nline one  \nline `two` <b>\n\n| a | b |\n|---|---|\n| 1 | **2** |\n\n- x\n- y\n")
    assert "<h1>Title</h1>" in page
    assert "<code>two</code> &lt;b&gt;" in page
    assert "<thead><tr><th>a</th><th>b</th></tr></thead>" in page
    assert "<td><strong>2</strong></td>" in page
    assert "<ul><li>x</li><li>y</li></ul>" in page


def test_plots_and_self_contained_page(tmp_path):
    rows = ROWS + [_row(0, 0, "supervised", 0.6, budget=1.0),
                   _row(0, 0, "full", 0.7, budget=1.0)]
    order = ["supervised", "logreg", "full"]
    report.plot_uar_vs_budget(rows, str(tmp_path / "u.png"), order)
    report.plot_paired_delta(rows, str(tmp_path / "d.png"), order)
    histories = {"full": [{"epochs": [1, 2], "logs": {"labeled_accuracy": [0.5, 0.7],
                                                     "mean_density_weight": [0.0, 1e-3]}}],
                 "supervised": [{"epochs": [1, 2], "logs": {"labeled_accuracy": [0.4, 0.8]}}]}
    report.plot_training_curves(histories, str(tmp_path / "c.png"))
    for name in ("u.png", "d.png", "c.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    wav = tmp_path / "audio" / "a.wav"
    wav.parent.mkdir()
    wav.write_bytes(b"RIFF")
    page = str(tmp_path / "report.html")
    report.write_report_html(page, title="t", markdown_text="# T\n",
                             images=[("curves", str(tmp_path / "c.png"))],
                             audio=[("anger", str(wav))])
    text = open(page, encoding="utf-8").read()
    assert "src='data:image/png;base64," in text
    assert "<audio controls preload='none' src='audio/a.wav'>" in text
    assert str(tmp_path) not in text  # nothing points outside the page's folder


@pytest.mark.skipif(report.find_browser() is None, reason="no headless Chromium installed")
def test_screenshot_in_a_real_browser(tmp_path):
    page = str(tmp_path / "report.html")
    report.write_report_html(page, title="t", markdown_text="# Hello\n\n| a |\n|---|\n| 1 |\n")
    png = str(tmp_path / "shot.png")
    assert report.screenshot(page, png, width=400, height=300)
    import matplotlib.image
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (300, 400)
    assert pixels[..., :3].std() > 0.01  # something was drawn on the white page
    assert not report.screenshot(str(tmp_path / "missing-dir" / "none.html"),
                                 str(tmp_path / "x" / "y.png"), timeout=30)


def _runs(pairs, budget=0.1):
    """Rows from {(fold, variant): [uar of run 0, run 1, ...]} (seed 0)."""
    return [_row(fold, 0, variant, uar, budget=budget, run=run)
            for (fold, variant), uars in pairs.items() for run, uar in enumerate(uars)]


def test_training_runs_are_averaged_per_fold_and_seed():
    rows = _runs({(0, "supervised"): [0.50, 0.40], (0, "full"): [0.60, 0.56],
                  (1, "supervised"): [0.30, 0.50], (1, "full"): [0.38]})
    pairs = statistics.paired_differences(rows, "full", 0.1)
    # fold 0: 0.58 - 0.45; fold 1: 0.38 - 0.40.
    np.testing.assert_allclose([d for _, _, d in pairs], [0.13, -0.02])
    (entry_s, entry_f) = statistics.summary(rows, ["supervised", "full"])
    assert entry_s["n"] == 4 and entry_s["units"] == 2 and entry_f["n"] == 3
    np.testing.assert_allclose(entry_s["uar"], (0.45 + 0.40) / 2)
    np.testing.assert_allclose(entry_f["uar"], (0.58 + 0.38) / 2)
    np.testing.assert_allclose(entry_s["uar_std"], np.std([0.45, 0.40], ddof=1))
    np.testing.assert_allclose(entry_f["delta"], (0.13 - 0.02) / 2)
    markdown = statistics.results_markdown(rows, ["supervised", "full"])
    assert "Several training runs per (fold, seed)" in markdown
    assert "| 0 | 0 | 45.0 | +13.0 |" in markdown  # per-pair table: run means


def test_interval_with_runs_resamples_the_pairs_of_run_means():
    """With independent training seeds per (fold, seed), the pairs of run
    means are independent: the interval is the bootstrap of those Δs (the
    runs are not resampled again: their spread is already in the Δs)."""
    rows = _runs({(0, "supervised"): [0.50, 0.40], (0, "full"): [0.60, 0.56],
                  (1, "supervised"): [0.30, 0.50], (1, "full"): [0.38, 0.52],
                  (2, "supervised"): [0.45, 0.47], (2, "full"): [0.40, 0.44]})
    entry = statistics.summary(rows, ["supervised", "full"])[1]
    deltas = [0.58 - 0.45, 0.45 - 0.40, 0.42 - 0.46]
    np.testing.assert_allclose(entry["delta"], np.mean(deltas))
    np.testing.assert_allclose((entry["delta_low"], entry["delta_high"]),
                               statistics.bootstrap_interval(deltas))


def test_a_metric_a_variant_lacks_is_left_out_of_the_pairs():
    """logreg before it scored validation speakers had no val_uar (NaN): no
    pair, not a tie."""
    rows = [_row(f, 0, v, 0.5, val_uar=(NAN if v == "logreg" else 0.4 + 0.01 * f))
            for f in range(3) for v in ("supervised", "logreg", "full")]
    assert statistics.paired_differences(rows, "logreg", 0.1, metric="val_uar") == []
    entries = {e["variant"]: e for e in statistics.summary(
        rows, ["supervised", "logreg", "full"], metric="val_uar")}
    assert entries["logreg"]["pairs"] == 0
    assert statistics.verdict(entries["logreg"]) == "too few pairs to say"
    assert entries["full"]["pairs"] == 3
    np.testing.assert_allclose(entries["supervised"]["uar"], 0.41)


def test_noise_floor_from_the_baselines_own_runs():
    rows = _runs({(0, "supervised"): [0.50, 0.60], (1, "supervised"): [0.40, 0.40],
                  (2, "supervised"): [0.70, 0.50], (3, "supervised"): [0.30]})
    floor = statistics.noise_floor(rows, 0.1)
    assert floor["pairs"] == 3  # fold 3 has one run
    np.testing.assert_allclose(floor["delta"], (0.1 + 0.0 - 0.2) / 3)
    assert (floor["wins"], floor["ties"], floor["losses"]) == (1, 1, 1)
    assert floor["beyond_3"] == 2
    # Variances of the runs (ddof=1): 0.005, 0, 0.02.
    np.testing.assert_allclose(floor["run_sd"], np.sqrt((0.005 + 0.0 + 0.02) / 3))
    markdown = statistics.results_markdown(rows, ["supervised"])
    assert "**Noise floor** (supervised-only, run 1 - run 0, over 3 pairs): -3.3" in markdown
    assert statistics.noise_floor(ROWS, 0.1) is None  # one run each


def test_results_csv_without_run_columns_reads_as_run_0(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("fold,seed,budget,variant,uar\n0,1,0.1,supervised,0.5\n")
    (row,) = statistics.read_results_csv(str(path))
    assert row["run"] == 0 and row["seed"] == 1
    assert math.isnan(row["translation_spread"])
    assert row["confusion"] == "" and math.isnan(row["admitted_fraction"])
    assert math.isnan(row["judge_admitted_fraction"])


def test_translation_spread_against_hand_computed_values(tmp_path):
    """Class 0: translations 0 and 2 in every bin (sd 1), real clips 0, 4 and a
    NaN row (sd 2): 0.5. Class 1: translations 1 and 1 (sd 0), real 0 and 6
    (sd 3): 0. Class 2: one real clip, left out. Mean 0.25."""
    translated = np.zeros((3, 2, 2, 3), np.float32)
    translated[0, 1] = 2.0
    translated[1] = 1.0
    real = np.full((3, 3, 2, 3), np.nan, np.float32)
    real[0, 0], real[0, 1] = 0.0, 4.0
    real[1, 0], real[1, 1] = 0.0, 6.0
    real[2, 0] = 5.0
    path = str(tmp_path / "translations.npz")
    np.savez(path, translated=translated, real=real)
    assert results.translation_spread(path) == pytest.approx(0.25)
    # Class 1's real clips made identical: no spread to compare with, left
    # out (not a division by zero): class 0 alone, 0.5.
    real[1, 1] = 0.0
    np.savez(path, translated=translated, real=real)
    assert results.translation_spread(path) == pytest.approx(0.5)
    real[0, 1] = 0.0  # no class left: NaN
    np.savez(path, translated=translated, real=real)
    assert math.isnan(results.translation_spread(path))
    assert math.isnan(results.translation_spread(str(tmp_path / "absent.npz")))
    np.savez(path, translated=translated[2:], real=real[2:])  # no class qualifies
    assert math.isnan(results.translation_spread(path))


def _cross_baseline(*args):
    import subprocess
    import sys

    from conftest import REPO_ROOT
    return subprocess.run([sys.executable, "tools/study_cross_baseline.py", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT))


def test_cross_baseline_pairs_cells_of_two_studies_by_training_run(tmp_path):
    first, second = str(tmp_path / "first.csv"), str(tmp_path / "second.csv")
    # First study: two runs of supervised and full; second: run 0 of
    # supervised (the same cells) and of a new variant.
    statistics.write_results_csv(
        ROWS[:4] + [_row(0, 0, "supervised", 0.30, run=1), _row(1, 0, "supervised", 0.30, run=1),
                    _row(0, 0, "full", 0.20, run=1), _row(1, 0, "full", 0.20, run=1)], first)
    statistics.write_results_csv(
        ROWS[:2] + [_row(0, 0, "new", 0.60), _row(1, 0, "new", 0.46)], second)
    result = _cross_baseline(second, "new:full", f"--also={first}", "--run=0")
    assert result.returncode == 0, result.stderr
    # new - full, run 0: +4 and +8 points; supervised's 2 run-0 cells checked.
    assert result.stdout.splitlines() == [
        "2 cells shared by the studies agree to the last digit",
        "new - full: +6.0 [+4.0, +8.0] 2/0/0 over 2 pairs; >3 points worse: 0"]
    # Without --run, full is the mean of its two runs, 0.38 and 0.29: +22 and +17.
    result = _cross_baseline(second, "new:full", f"--also={first}")
    assert result.stdout.splitlines()[1].startswith("new - full: +19.5 ["), result.stdout
    # Two studies' variants of one name: the other's renamed.
    statistics.write_results_csv(ROWS[:2] + [_row(0, 0, "full", 0.60), _row(1, 0, "full", 0.46)],
                                 second)
    result = _cross_baseline(second, "full:full_first", f"--also={first}",
                             "--rename_also=full:full_first", "--run=0")
    assert result.stdout.splitlines()[1].startswith("full - full_first: +6.0 ["), result.stdout
    # Nothing to pair: the error names every file and the run.
    result = _cross_baseline(second, "full:full_first", f"--also={first}",
                             "--rename_also=full:full_first", "--run=0", "--budget=0.2")
    assert result.returncode == 2
    assert f"at budget 0.2, run 0 in {second}, {first}" in result.stderr


@pytest.mark.parametrize("case", ["uar", "train_seed", "nothing_shared", "rename_unused",
                                  "rename_malformed"])
def test_cross_baseline_refuses_what_it_cannot_pair(tmp_path, case):
    first, second = str(tmp_path / "first.csv"), str(tmp_path / "second.csv")
    statistics.write_results_csv(ROWS, first)
    mine = [_row(0, 0, "new", 0.6), _row(1, 0, "new", 0.5)]
    extra = []
    if case == "uar":
        mine += [_row(0, 0, "supervised", 0.51)] + ROWS[1:2]
        expected = ("supervised fold 0 seed 0 budget 0.1 run 0: UAR 0.5 in "
                    f"{second} but 0.51 in {first}")
    elif case == "train_seed":
        # Fold 0 of the second study trained with another seed throughout.
        mine = [dict(row, train_seed=7) if row["fold"] == 0 else row
                for row in mine + [_row(0, 0, "supervised", 0.5)] + ROWS[1:2]]
        expected = (f"fold 0 seed 0 budget 0.1 run 0: --train_seed [7] in {second} "
                    f"but [0] in {first}")
    elif case == "nothing_shared":
        expected = f"{second} and {first} share no cell"
    elif case == "rename_unused":
        mine += ROWS[:2]
        extra, expected = ["--rename_also=ful:x"], f"--rename_also: no variant ful in {first}"
    else:
        mine += ROWS[:2]
        extra, expected = ["--rename_also=full"], "--rename_also=full: must be OLD:NEW"
    if case == "uar":  # the other way round: the differing cell is in the first file read
        first, second = second, first
        statistics.write_results_csv(ROWS, second)
        statistics.write_results_csv(mine, first)
        result = _cross_baseline(first, "new:full", f"--also={second}")
        expected = ("supervised fold 0 seed 0 budget 0.1 run 0: UAR 0.51 in "
                    f"{first} but 0.5 in {second}")
    else:
        statistics.write_results_csv(mine, second)
        result = _cross_baseline(second, "new:full", f"--also={first}", *extra)
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr


# Pooled UAR. Two (fold, seed) units, two classes (rows: true class):
#   unit (0, 0): supervised [[3,1],[1,0]] UAR (3/4 + 0/1)/2 = 0.375,
#                full       [[3,1],[0,1]] UAR (3/4 + 1/1)/2 = 0.875  (Δ +0.5,
#                the second class has one clip)
#   unit (1, 0): supervised [[2,2],[5,5]] UAR 0.5, full [[4,0],[5,5]] 0.75 (Δ +0.25)
# Pooled: supervised [[5,3],[6,5]] (5/8 + 5/11)/2, full [[7,1],[5,6]]
# (7/8 + 6/11)/2, Δ = (2/8 + 1/11)/2 = 1/8 + 1/22, where the mean of the
# per-unit Δ is 0.375: the one-clip class no longer weighs half a fold.
POOLED_DELTA = 1 / 8 + 1 / 22
POOLED = {(0, 0): ([[3, 1], [1, 0]], [[3, 1], [0, 1]]),
          (1, 0): ([[2, 2], [5, 5]], [[4, 0], [5, 5]])}


def _pooled_rows(units=POOLED):
    rows = []
    for (fold, seed), (supervised, full) in units.items():
        for variant, matrix in (("supervised", supervised), ("full", full)):
            uar = statistics.pooled_uar(np.asarray(matrix))
            rows.append(_row(fold, seed, variant, uar,
                             confusion=statistics.confusion_text(matrix)))
    return rows


def test_pooled_uar_of_hand_computed_matrices():
    assert statistics.pooled_uar(np.array([[5, 3], [6, 5]])) == pytest.approx((5 / 8 + 5 / 11) / 2)
    assert statistics.pooled_uar(np.array([[2, 0], [0, 0]])) == 1.0  # a class without clips is left out
    assert math.isnan(statistics.pooled_uar(np.zeros((2, 2))))
    stacked = statistics.pooled_uar(np.array([[[3, 1], [1, 0]], [[2, 2], [5, 5]]]))
    np.testing.assert_allclose(stacked, [0.375, 0.5])


def test_pooled_comparison_sums_the_units_matrices():
    c = statistics.pooled_comparison(_pooled_rows(), "full", 0.1)
    assert c["units"] == 2
    assert c["uar"] == pytest.approx((7 / 8 + 6 / 11) / 2)
    assert c["baseline_uar"] == pytest.approx((5 / 8 + 5 / 11) / 2)
    assert c["delta"] == pytest.approx(POOLED_DELTA)
    # Resamples of two units: both (Δ pooled, prob 1/2), unit (0,0) twice
    # (+0.5, 1/4), unit (1,0) twice (+0.25, 1/4): the pooled one is the lowest.
    assert (c["delta_low"], c["delta_high"]) == pytest.approx((POOLED_DELTA, 0.5))
    assert c["per_seed"] == pytest.approx({0: POOLED_DELTA})
    # The mean of the per-fold differences is another number.
    assert np.mean([d for *_, d in statistics.paired_differences(
        _pooled_rows(), "full", 0.1)]) == pytest.approx(0.375)


def test_pooled_comparison_per_seed_and_without_matrices():
    units = {(0, 0): POOLED[(0, 0)], (0, 1): POOLED[(1, 0)]}
    c = statistics.pooled_comparison(_pooled_rows(units), "full", 0.1)
    assert c["per_seed"] == pytest.approx({0: 0.5, 1: 0.25})
    # Rows written before the column (no matrix) have no pooled figure.
    assert statistics.pooled_comparison(ROWS, "full", 0.1) is None
    old_full = [r if r["variant"] == "supervised" else {**r, "confusion": ""}
                for r in _pooled_rows()]
    assert statistics.pooled_comparison(old_full, "full", 0.1) is None
    assert "Pooled over folds" not in statistics.results_markdown(ROWS, ["supervised", "full"])


def test_pooled_table_and_class_supports_in_the_markdown():
    text = statistics.results_markdown(_pooled_rows(), ["supervised", "full"],
                                       class_names=("anger", "disgust"))
    assert "### Pooled over folds (budget 10 %)" in text
    assert f"| supervised | 2 | {100 * (5 / 8 + 5 / 11) / 2:.1f} | (reference) | |" in text
    delta = f"{100 * POOLED_DELTA:+.1f}"
    assert (f"| full | 2 | {100 * (7 / 8 + 6 / 11) / 2:.1f} | {delta} [{delta}, +50.0] | "
            f"seed 0 {delta} |") in text
    assert "| fold | anger | disgust |" in text
    assert "| 0 | 4 | 1 |" in text and "| 1 | 4 | 10 |" in text
    assert statistics.class_supports(_pooled_rows(), 0.1)[0].tolist() == [4, 1]
    # Validation UAR (--study_metric=val_uar): no test-clip tables.
    assert "Pooled over folds" not in statistics.results_markdown(
        _pooled_rows(), ["supervised", "full"], metric="val_uar")


def test_confusion_text_round_trip_and_malformed_cells(tmp_path):
    matrix = [[15, 0, 4], [0, 0, 1], [2, 2, 3]]
    assert statistics.confusion_text(matrix) == "15 0 4;0 0 1;2 2 3"
    assert statistics.parse_confusion("15 0 4;0 0 1;2 2 3").tolist() == matrix
    assert statistics.parse_confusion("") is None and statistics.parse_confusion(NAN) is None
    for bad in ("1 2;3", "1 x;3 4", "1 -2;3 4", "1 2 3;4 5 6"):
        with pytest.raises(ValueError, match="confusion"):
            statistics.parse_confusion(bad)
    path = str(tmp_path / "results.csv")
    statistics.write_results_csv(_pooled_rows(), path)
    back = statistics.read_results_csv(path)
    assert [r["confusion"] for r in back] == [r["confusion"] for r in _pooled_rows()]
    assert statistics.pooled_comparison(back, "full", 0.1)["delta"] == pytest.approx(POOLED_DELTA)


def test_pooled_interval_is_the_paired_one_when_every_unit_has_the_same_clips():
    """With the same clips per class in every unit, pooled recall is the mean
    of the units' recalls, so the pooled Δ of any resample is the mean of its
    per-unit Δ: the cluster bootstrap must give bootstrap_interval's interval
    over the paired differences (same resamples), to rounding."""
    rng = np.random.default_rng(3)
    units = {}
    for fold in range(15):  # 3 classes of 97, 89 and 101 clips in every unit
        matrices = []
        for _ in range(2):
            matrix = np.zeros((3, 3), int)
            for cls, clips in enumerate((97, 89, 101)):
                right = int(rng.integers(0, clips + 1))
                matrix[cls, cls] = right
                matrix[cls, (cls + 1) % 3] = clips - right
            matrices.append(matrix.tolist())
        units[(fold, 0)] = tuple(matrices)
    rows = _pooled_rows(units)
    deltas = [d for *_, d in statistics.paired_differences(rows, "full", 0.1)]
    c = statistics.pooled_comparison(rows, "full", 0.1)
    assert c["delta"] == pytest.approx(np.mean(deltas))
    assert (c["delta_low"], c["delta_high"]) == pytest.approx(
        statistics.bootstrap_interval(deltas))
    assert c["delta_high"] > c["delta_low"]


def test_pooled_unit_of_several_runs_is_their_mean_matrix():
    rows = _pooled_rows({(0, 0): POOLED[(0, 0)]})
    # A second supervised run of unit (0, 0): [[1,3],[1,0]]; the unit's
    # matrix is the mean [[2,2],[1,0]], UAR (2/4 + 0)/2 = 0.25, full's 0.875.
    rows.append({**_row(0, 0, "supervised", 0.125, confusion="1 3;1 0"), "run": 1})
    c = statistics.pooled_comparison(rows, "full", 0.1)
    assert c["baseline_uar"] == pytest.approx(0.25)
    assert c["delta"] == pytest.approx(0.875 - 0.25)
    # A run without a matrix takes its variant's unit out of the pooled figures.
    rows.append({**_row(0, 0, "full", 0.5), "run": 1})
    assert statistics.pooled_comparison(rows, "full", 0.1) is None


def test_pooled_table_names_supervised_on_the_shared_units():
    rows = _pooled_rows() + [_row(2, 0, "supervised", 1.0, confusion="3 0;0 3")]
    text = statistics.results_markdown(rows, ["supervised", "full"])
    pooled_all = (8 / 11 + 8 / 14) / 2  # [[8,3],[6,8]] with unit (2, 0)
    assert f"| supervised | 3 | {100 * pooled_all:.1f} | (reference) | |" in text
    assert (f"| full | 2 | {100 * (7 / 8 + 6 / 11) / 2:.1f} (supervised "
            f"{100 * (5 / 8 + 5 / 11) / 2:.1f} on these units) |") in text


def test_pooled_figures_name_a_bad_cell():
    bad = _pooled_rows() + [_row(1, 2, "full", 0.5, confusion="1 2;3")]
    with pytest.raises(ValueError, match="fold 1 seed 2 budget 0.1 variant full"):
        statistics.pooled_comparison(bad, "full", 0.1)
    # A bad cell at another budget does not stop this budget's tables.
    other = _pooled_rows() + [_row(1, 2, "full", 0.5, budget=0.2, confusion="x")]
    assert statistics.class_supports(other, 0.1)[0].tolist() == [4, 1]
    mixed = _pooled_rows() + [_row(3, 0, "full", 0.5, confusion="1 0 0;0 1 0;0 0 1")]
    with pytest.raises(ValueError, match="different sizes.*2x2 at fold 0 seed 0.*3x3 at fold 3"):
        statistics.pooled_comparison(mixed, "full", 0.1)


def test_cross_baseline_adds_the_pooled_difference(tmp_path):
    path = str(tmp_path / "pooled.csv")
    statistics.write_results_csv(_pooled_rows(), path)
    result = _cross_baseline(path, "full:supervised")
    assert result.returncode == 0, result.stderr
    delta = f"{100 * POOLED_DELTA:+.1f}"
    assert result.stdout.splitlines() == [
        "full - supervised: +37.5 [+25.0, +50.0] 2/0/0 over 2 pairs; >3 points worse: 0",
        f"  pooled over folds: {delta} [{delta}, +50.0] over 2 units "
        f"(full {100 * (7 / 8 + 6 / 11) / 2:.1f}, supervised {100 * (5 / 8 + 5 / 11) / 2:.1f})"]


def test_admitted_fraction_is_the_mean_after_warm_up():
    logs = {"aux_weight": [0.0, 0.0, 0.5, 1.0], "admitted_fraction": [0.9, 0.9, 0.02, 0.04]}
    assert results._after_warmup_mean(logs, "admitted_fraction") == pytest.approx(0.03)
    assert math.isnan(results._after_warmup_mean({"aux_weight": [0.0]}, "admitted_fraction"))
    assert math.isnan(results._after_warmup_mean(
        {"aux_weight": [0.0, 0.0], "admitted_fraction": [0.5, 0.5]}, "admitted_fraction"))
