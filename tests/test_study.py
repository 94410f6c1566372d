"""--mode=study on a tiny generated corpus: outputs, resume, determinism, errors."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, TINY_TRAIN, run_main

from i2a_tf import config as config_lib
from i2a_tf.study import grid as grid_lib
from i2a_tf.study import results as results_lib
from i2a_tf.study import statistics

STUDY = ("--mode=study", "--speech_corpus=synthetic", "--face_corpus=synthetic",
         *TINY_TRAIN, "--epochs=2", "--warmup_epochs=1", "--steps_per_epoch=2",
         "--pseudo_label_every=1", "--num_folds=2",
         # 6 faces a class: translations.npz needs 4 of each.
         "--synthetic_images_per_class=2", "--study_folds=0",
         "--study_seeds=0", "--study_budgets=0.5",
         "--study_variants=logreg,supervised,full",
         # Two cells at once: the parallel path (results must not depend on it).
         "--study_workers=2")
CELLS = ("logreg", "supervised", "full")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One finished tiny study: (workdir, study dir, stdout of the run)."""
    workdir = str(tmp_path_factory.mktemp("study"))
    result = run_main(*STUDY, f"--workdir={workdir}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, os.path.join(workdir, "study"), result.stdout


def _cell(root: str, variant: str) -> str:
    return os.path.join(root, "fold0_seed0_budget0.5", variant)


def test_every_output_exists_and_parses(study):
    _, root, stdout = study
    assert "3 cells" in stdout and "[3/3]" in stdout, stdout
    with open(os.path.join(root, "results.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["variant"] for r in rows) == sorted(CELLS)
    for row in rows:
        assert 0.0 <= float(row["uar"]) <= 1.0
        with open(os.path.join(_cell(root, row["variant"]), "metrics.json"),
                  encoding="utf-8") as f:
            metrics = json.load(f)
        assert float(row["uar"]) == metrics["uar"]
        matrix = statistics.parse_confusion(row["confusion"])
        assert matrix.tolist() == metrics["confusion_matrix"]
        assert statistics.pooled_uar(matrix) == pytest.approx(metrics["uar"])
    full = next(r for r in rows if r["variant"] == "full")
    assert float(full["mean_density_weight"]) >= 0.0  # the full run's own figures
    spread = results_lib.translation_spread(os.path.join(_cell(root, "full"),
                                                         "translations.npz"))
    assert full["translation_spread"] == ("" if math.isnan(spread) else f"{spread:.6g}")
    with open(os.path.join(_cell(root, "full"), "history.json"), encoding="utf-8") as f:
        logs = json.load(f)["logs"]
    for key in ("admitted_fraction", "judge_admitted_fraction"):
        value = results_lib._after_warmup_mean(logs, key)
        assert full[key] == ("" if math.isnan(value) else f"{value:.6g}"), key
    assert "judge_admitted_fraction" in logs  # the full run has a judge
    markdown = open(os.path.join(root, "results.md"), encoding="utf-8").read()
    assert markdown.index("supervised") < markdown.index("logistic regression")
    assert "### Pooled over folds" in markdown  # from the cells' confusion matrices
    assert "| fold | " + " | ".join(config_lib.DataConfig().classes) + " |" in markdown
    for name in ("uar_vs_budget.png", "paired_delta.png", "training_curves.png"):
        with open(os.path.join(root, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    for name in config_lib.DataConfig().classes:
        assert os.path.getsize(os.path.join(root, f"translated_{name}.png")) > 0
        assert os.path.getsize(os.path.join(root, f"translated_{name}.wav")) > 0
    html = open(os.path.join(root, "report.html"), encoding="utf-8").read()
    assert "data:image/png;base64," in html and "<audio" in html
    record = json.load(open(os.path.join(_cell(root, "full"), "cell.json")))
    assert "--use_translation" in record["command"]
    assert record["commit"]  # the code that trained it, listed in results.md
    assert f"Cells trained at: `{record['commit']}` (3 cells)" in markdown
    # What it was trained with: a reinstalled machine's cells can differ.
    assert record["environment"] == results_lib.environment()
    assert "tensorflow 2." in record["environment"] and "numpy " in record["environment"]
    assert f"Cells trained with: {record['environment']} (3 cells)" in markdown
    assert "--deterministic" in open(os.path.join(root, "cells.cfg")).read().split()


def test_rerun_skips_finished_cells_and_a_lost_cell_runs_again(study):
    workdir, root, _ = study
    stamp = os.path.getmtime(os.path.join(_cell(root, "full"), "metrics.json"))
    os.remove(os.path.join(_cell(root, "supervised"), "cell.json"))
    # What an interrupted cell leaves: it must start again from scratch.
    with open(os.path.join(_cell(root, "supervised"), "stale.txt"), "w") as f:
        f.write("from an interrupted run")
    result = run_main(*STUDY, f"--workdir={workdir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 already finished" in result.stdout
    assert "[3/3] fold 0 seed 0 budget 50% supervised" in result.stdout
    assert "full " not in result.stdout.split("already finished")[1].split("results:")[0]
    assert os.path.getmtime(os.path.join(_cell(root, "full"), "metrics.json")) == stamp
    assert not os.path.exists(os.path.join(_cell(root, "supervised"), "stale.txt"))
    assert os.path.exists(os.path.join(_cell(root, "supervised"), "cell.json"))


def test_a_cell_rerun_in_a_fresh_process_gives_the_same_numbers(study, tmp_path):
    _, root, _ = study
    cell = _cell(root, "full")
    command = json.load(open(os.path.join(cell, "cell.json")))["command"]
    again = str(tmp_path / "again")
    os.makedirs(again)
    os.symlink(os.path.join(root, "fold0_seed0_budget0.5", "data"),
               os.path.join(again, "data"))
    command = [c if not c.startswith("--workdir=") else f"--workdir={again}"
               for c in command]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.load(open(os.path.join(cell, "metrics.json")))
    second = json.load(open(os.path.join(again, "metrics.json")))
    assert second["uar"] == first["uar"]
    assert second["confusion_matrix"] == first["confusion_matrix"]
    history = [json.load(open(os.path.join(d, "history.json")))["logs"]
               for d in (cell, again)]
    assert history[0] == history[1]


def test_changed_shared_flags_are_refused(study):
    workdir, _, _ = study
    result = run_main(*STUDY, f"--workdir={workdir}", "--lambda_t=0.5", timeout=300)
    assert result.returncode == 2
    assert "its cells were run with other flags" in result.stderr
    assert "--lambda_t" in result.stderr
    # Rebuilding the report trains nothing, so it accepts the cells as they are.
    again = run_main(*STUDY, f"--workdir={workdir}", "--lambda_t=0.5",
                     "--study_report_only", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.parametrize("values, message", [
    ({"study_variants": ["supervised", "nope"]},
     "--study_variants=supervised,nope: unknown variant 'nope'"),
    ({"study_folds": []}, "--study_folds=: the grid needs at least one value"),
    ({"study_seeds": ["x"]}, "--study_seeds=x: 'x' is not an integer"),
    ({"study_budgets": ["0"]}, "--study_budgets=0: a budget must be > 0"),
    ({"study_budgets": ["1.5"]}, "--study_budgets=1.5: '1.5' must be [0.0, 1.0]"),
    ({"study_variants": ["full", "full"]}, "variants must be distinct"),
    ({"study_variant_flags": "mine"}, "entry 'mine' is not of the form name:--flag"),
    ({"study_variant_flags": "mine:lambda_t=2"}, "'lambda_t=2' is not a --flag"),
])
def test_bad_study_flags_name_the_flag(values, message):
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.config_from_flat(values)
    assert message in str(error.value)


def test_grid_errors_and_custom_variants(tmp_path):
    config = config_lib.config_from_flat({
        "workdir": str(tmp_path), "study_folds": ["0", "7"]})
    with pytest.raises(config_lib.ConfigError, match="fold 7 is not < --num_folds=5"):
        grid_lib.study_grid(config)
    config = config_lib.config_from_flat({
        "workdir": str(tmp_path), "test_speakers": ["03"]})
    with pytest.raises(config_lib.ConfigError, match="leave --test_speakers empty"):
        grid_lib.study_grid(config)
    config = config_lib.config_from_flat({
        "workdir": str(tmp_path), "study_variants": ["supervised", "half_t"],
        "study_variant_flags": "half_t:--lambda_t=0.5 --nouse_pseudo_labels"})
    grid = grid_lib.study_grid(config)
    assert grid.variant_flags["half_t"] == ("--lambda_t=0.5", "--nouse_pseudo_labels")
    assert len(grid.cells()) == 5 * 3 * 2
    quick = grid_lib.study_grid(config_lib.config_from_flat(
        {"workdir": str(tmp_path), "study_quick": True}))
    assert [c.variant for c in quick.cells()] == ["logreg", "supervised", "full"]
    assert {(c.fold, c.seed, c.budget) for c in quick.cells()} == {(0, 0, 0.1)}


def test_shared_flags_round_trip_through_main_flag_parsing(tmp_path):
    """cells.cfg holds every shared flag, and main parses it back to the same
    configuration (bools as --name/--noname, lists comma-joined)."""
    config = config_lib.config_from_flat({
        "workdir": str(tmp_path), "classes": ["anger", "fear"], "lambda_t": 0.25,
        "use_annealing": False, "label_map": []})
    lines = grid_lib.shared_flags(config)
    assert "--nouse_annealing" in lines and "--classes=anger,fear" in lines
    assert "--deterministic" in lines
    assert not any(line.startswith(("--study_", "--workdir=", "--seed="))
                   for line in lines)
    path = tmp_path / "cells.cfg"
    path.write_text("\n".join(lines) + "\n")
    from absl import flags as absl_flags
    from i2a_tf import main as main_lib
    values = absl_flags.FlagValues()
    main_lib.define_flags(values)
    values(["main", f"--flagfile={path}"])
    tree = config_lib.config_to_dict(config)
    flat = {f.name: (tree[s][f.name] if s else tree[f.name])
            for s, f in config_lib.leaf_fields()}
    for line in lines:
        name = line[2:].split("=")[0]
        name = name[2:] if name not in flat and name.startswith("no") else name
        parsed = values[name].value
        expected = True if name == "deterministic" else flat[name]
        assert (tuple(parsed) if isinstance(parsed, list) else parsed) == expected, name


def test_flags_added_to_the_code_at_their_defaults_keep_a_study_valid():
    from i2a_tf.study import grid as grid_lib

    before = ["--epochs=24", "--use_translation", "--warmup_epochs=8"]
    # A flag the old study.json does not name, at its default: compatible.
    assert grid_lib.flags_added_since(before, before + ["--train_seed=-1"]) == [
        "--train_seed=-1"]
    assert grid_lib.flags_added_since(before, before + ["--nouse_consistency"]) == [
        "--nouse_consistency"]
    # Not at its default, or a changed value of a recorded flag, or a removed
    # flag: a difference.
    assert grid_lib.flags_added_since(before, before + ["--train_seed=3"]) is None
    assert grid_lib.flags_added_since(
        before, ["--epochs=24", "--nouse_translation", "--warmup_epochs=8"]) is None
    assert grid_lib.flags_added_since(before, before[:2]) is None


def test_every_built_in_variant_is_a_known_study_variant():
    from i2a_tf import config as config_lib
    from i2a_tf.study import grid as grid_lib

    assert set(grid_lib.BUILTIN_VARIANTS) == (
        set(config_lib.STUDY_VARIANTS) | set(config_lib.OPTIONAL_STUDY_VARIANTS))
    assert set(grid_lib.LABELS) == set(grid_lib.BUILTIN_VARIANTS)
    config_lib.config_from_flat({"study_variants": ["supervised", "supervised_reseeded"]})


def test_training_runs_get_their_own_seeds_and_are_averaged(study):
    """--study_train_seeds=2: each network variant of a (fold, seed) trains
    twice, with the derived --train_seed of each run; logreg once."""
    workdir, _, _ = study
    root = os.path.join(workdir, "study_runs")
    flags = [f if not f.startswith("--study_variants=") else
             "--study_variants=logreg,supervised" for f in STUDY]
    # Compared on a validation speaker (development): the progress lines and
    # the tables show its UAR, never the test speakers'.
    result = run_main(*flags, f"--workdir={workdir}", f"--study_dir={root}",
                      "--study_train_seeds=2", "--val_speaker_fraction=0.25",
                      "--study_metric=val_uar", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 cells" in result.stdout and "x 2 training runs" in result.stdout
    progress = [line for line in result.stdout.splitlines() if "budget 50%" in line]
    assert len(progress) == 3 and all("val UAR" in line for line in progress), progress
    assert not any(re.search(r"(?<!val) UAR", line) for line in progress), progress
    seeds = []
    for run in (0, 1):
        record = json.load(open(os.path.join(_cell(root, f"supervised_run{run}"),
                                             "cell.json")))
        assert record["run"] == run
        assert f"--train_seed={grid_lib.run_train_seed(0, 0, run)}" in record["command"]
        seeds.append(grid_lib.run_train_seed(0, 0, run))
    assert os.path.exists(os.path.join(_cell(root, "logreg"), "metrics.json"))
    with open(os.path.join(root, "results.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["variant"], r["run"], r["train_seed"]) for r in rows) == sorted(
        [("logreg", "0", "-1"), ("supervised", "0", str(seeds[0])),
         ("supervised", "1", str(seeds[1]))])
    markdown = open(os.path.join(root, "results.md"), encoding="utf-8").read()
    assert "Several training runs per (fold, seed)" in markdown
    assert "Compared by validation UAR (last epoch)" in markdown
    supervised_row = next(line for line in markdown.splitlines()
                          if line.startswith("| supervised only"))
    assert supervised_row.split(" | ")[5:7] == ["–", "–"]  # no test WA / macro-F1
    val = [json.load(open(os.path.join(_cell(root, f"supervised_run{r}"),
                                        "history.json")))["logs"]["val_uar"][-1]
           for r in (0, 1)]
    assert sorted(float(r["val_uar"]) for r in rows if r["variant"] == "supervised") == \
        pytest.approx(sorted(val), abs=1e-6)
    # The logistic regression scores the validation speaker too.
    logreg = json.load(open(os.path.join(_cell(root, "logreg"), "metrics.json")))
    assert 0.0 <= logreg["val_uar"] <= 1.0
    assert float(next(r for r in rows if r["variant"] == "logreg")["val_uar"]) == \
        pytest.approx(logreg["val_uar"], abs=1e-6)


def test_training_runs_are_refused_with_a_variant_that_fixes_the_seed():
    with pytest.raises(config_lib.ConfigError, match="--study_variants=.*supervised_reseeded"):
        config_lib.config_from_flat({"study_variants": ["supervised", "supervised_reseeded"],
                                     "study_train_seeds": 2})
    with pytest.raises(config_lib.ConfigError, match="variant 'mine' sets --train_seed"):
        config_lib.config_from_flat({"study_variants": ["supervised", "mine"],
                                     "study_variant_flags": "mine:--train_seed=4",
                                     "study_train_seeds": 1})
    with pytest.raises(config_lib.ConfigError, match="--study_train_seeds=-1"):
        config_lib.config_from_flat({"study_train_seeds": -1})
    with pytest.raises(config_lib.ConfigError, match="--train_seed=5: --study_train_seeds=2"):
        config_lib.config_from_flat({"study_train_seeds": 2, "train_seed": 5})


def test_run_seeds_differ_between_folds_seeds_and_runs_and_variants_share_them():
    seeds = {(f, s, r): grid_lib.run_train_seed(f, s, r)
             for f in range(5) for s in range(3) for r in range(3)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2 ** 31 for v in seeds.values())
    assert grid_lib.run_train_seed(1, 2, 0) == grid_lib.run_train_seed(1, 2, 0)
    grid = grid_lib.Grid((0, 1), (0,), (0.1,), ("logreg", "supervised", "full"),
                         dict(grid_lib.BUILTIN_VARIANTS), train_seeds=2)
    cells = grid.cells()
    assert [c.run_name for c in cells if c.fold == 0] == [
        "logreg", "supervised_run0", "full_run0", "supervised_run1", "full_run1"]
    by_run = {}
    for c in cells:
        if c.variant != "logreg":
            by_run.setdefault((c.fold, c.run), set()).add(c.train_seed)
    assert all(len(v) == 1 for v in by_run.values())  # variants share a run's seed
    # Without --study_train_seeds the cell's own flags decide (--seed).
    assert grid_lib.Cell(0, 0, 0.1, "supervised").train_seed is None


def test_logreg_features_follow_the_speaker_normalisation():
    """The baseline's clip features as if the clip's frames had been
    normalised by its speaker's statistics (hand values, 2 bands)."""
    import numpy as np
    from i2a_tf.data.frontend import BandStatistics
    from i2a_tf.study.logreg import speaker_normalised
    features = np.array([4.0, 10.0, 2.0, 6.0, 1.5], np.float32)  # means, stds, s
    speaker = BandStatistics(np.array([1.0, 4.0], np.float32),
                             np.array([2.0, 3.0], np.float32))
    np.testing.assert_array_equal(speaker_normalised(features, speaker, "none"), features)
    np.testing.assert_array_equal(speaker_normalised(features, speaker, "mean"),
                                  [3.0, 6.0, 2.0, 6.0, 1.5])
    np.testing.assert_array_equal(speaker_normalised(features, speaker, "mean_std"),
                                  [1.5, 2.0, 1.0, 2.0, 1.5])


_STOPPED_STUDY = r'''
import sys
from i2a_tf import config as config_lib
from i2a_tf.study import runner

workdir, pid_file = sys.argv[1], sys.argv[2]
SLEEPER = ("import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
           "time.sleep(300)")

def run_cell(self, cell):  # a cell whose process runs until it is ended
    code = runner._run_logged([sys.executable, "-c", SLEEPER, pid_file],
                              pid_file + ".log", False)
    return {"returncode": code, "seconds": 0.0}

runner.Study.prepare = lambda self, cell: None
runner.Study.run_cell = run_cell
runner.run_study(config_lib.config_from_flat({
    "workdir": workdir, "num_folds": 2, "study_folds": ["0"], "study_seeds": ["0"],
    "study_budgets": ["0.5"], "study_variants": ["supervised"]}))
'''


def test_a_study_stopped_by_sigterm_ends_its_running_cells(tmp_path):
    """`kill` (SIGTERM) of the study process reaches only it, not its cells'
    processes; the study ends them before it exits, so no orphan trains on into
    a cell directory the resumed study starts afresh."""
    import signal
    import time
    script = tmp_path / "stopped_study.py"
    script.write_text(_STOPPED_STUDY)
    pid_file = str(tmp_path / "cell.pid")
    study_process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "work"), pid_file],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (os.path.exists(pid_file) and open(pid_file).read()):
        assert study_process.poll() is None, study_process.communicate()
        assert time.time() < deadline, "the cell's process never started"
        time.sleep(0.2)
    cell_pid = int(open(pid_file).read())
    os.kill(cell_pid, 0)  # running
    study_process.send_signal(signal.SIGTERM)
    stdout, stderr = study_process.communicate(timeout=120)
    assert study_process.returncode != 0
    assert "ended 1 running cell process" in stdout, (stdout, stderr[-2000:])
    assert "StudyInterrupted" in stderr
    with pytest.raises(ProcessLookupError):  # ended and reaped by the study
        os.kill(cell_pid, 0)
