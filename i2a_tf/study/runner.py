"""`--mode=study`: run the grid, then the paired statistics and the report.

  <study_dir>/
    study.json            the shared flags and the grid (a resumed study must match)
    cells.cfg             the cells' flagfile (shared flags, deterministic ops)
    fold{F}_seed{S}_budget{B}/
      data/               records prepared once for every variant of this group
      <variant>/          a training run's workdir (metrics.json, history.json,
                          train.log, cell.json once finished); with
                          --study_train_seeds, <variant>_run{r}/ per run
    results.csv  results.md  *.png  translated_<class>.{png,wav}  report.html

Each network cell runs `python -m i2a_tf.main --flagfile=cells.cfg --mode=train
...` in a fresh process, so its result is a function of its flags alone (and a
user can re-run any one cell from the command in its cell.json). A finished
cell (cell.json with the same command) is never re-run; a killed study re-run
with the same flags continues where it stopped. A cell that was interrupted
starts again from scratch rather than from its checkpoint: a resumed training
replays its input stream from the start, so its numbers would differ from an
uninterrupted run's. `--study_workers=N` trains N cells at once (threads, each
waiting on its cell's process; a group's records are prepared once, under a
lock). A study stopped by Ctrl-C or SIGTERM (`kill`, a scheduler's time limit)
ends its running cells' processes before it exits, so none is left training
into a directory the resumed study starts afresh.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from i2a_tf.config import Config, ConfigError, config_from_dict, config_to_dict
from i2a_tf.study import grid as grid_lib
from i2a_tf.study.grid import BASELINE, LABELS, Cell, Grid

log = logging.getLogger("i2a_tf.study")

CELL_JSON = "cell.json"


class StudyError(RuntimeError):
    """A study could not run (e.g. a prepare step failed); names the log."""


def _main_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "i2a_tf.main", *args]


# The cells' (and prepares') processes running now, so a stopped study can
# end them (_stop_children) instead of leaving them to train on as orphans.
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()


class StudyInterrupted(KeyboardInterrupt):
    """The study process got SIGTERM: raised in the main thread, handled as
    Ctrl-C is (no new cell starts, the running cells' processes are ended)."""


def _run_logged(command: list[str], log_path: str, show_progress: bool) -> int:
    """Runs `command`; stderr (its log lines) to `log_path`, stdout there too
    unless `show_progress` (then to this terminal, for Keras' progress bar).
    The process is registered for _stop_children while it runs."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with open(log_path, "w", encoding="utf-8") as log_file:
        with _CHILDREN_LOCK:
            process = subprocess.Popen(command, stdout=None if show_progress else log_file,
                                       stderr=log_file, env=env)
            _CHILDREN.add(process)
        try:
            return process.wait()
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(process)


def _stop_children(grace_seconds: float = 20.0) -> int:
    """Ends every registered child process: SIGTERM, then SIGKILL for one still
    running after `grace_seconds`. Returns how many were running."""
    with _CHILDREN_LOCK:
        running = [p for p in _CHILDREN if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.time() + grace_seconds
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return len(running)


def _raise_interrupted(signum, frame) -> None:
    raise StudyInterrupted(f"signal {signum}")


class Study:
    """The cells of one study directory and how to run them."""

    def __init__(self, config: Config):
        self.config = config
        self.grid: Grid = grid_lib.study_grid(config)
        self.root = config.study_dir
        self.shared = grid_lib.shared_flags(config)
        self.flagfile = os.path.join(self.root, "cells.cfg")
        self.workers = config.study.study_workers
        # Keras' progress bars of parallel cells would overwrite each other.
        self.on_terminal = sys.stdout.isatty() and self.workers == 1
        self._group_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # -- Layout -----------------------------------------------------------------

    def group_dir(self, cell: Cell) -> str:
        return os.path.join(self.root, cell.records_key)

    def cell_dir(self, cell: Cell) -> str:
        return os.path.join(self.group_dir(cell), cell.run_name)

    def cell_flags(self, cell: Cell) -> list[str]:
        """The flags that make `cell` out of the shared flagfile."""
        flags = [f"--test_fold={cell.fold}", f"--seed={cell.seed}",
                 f"--label_fraction={cell.budget:g}"]
        if cell.train_seed is not None:  # runs of network variants only
            flags.append(f"--train_seed={cell.train_seed}")
        return flags

    def train_command(self, cell: Cell) -> list[str]:
        verbose = 1 if self.on_terminal else 2
        return _main_command(
            f"--flagfile={os.path.abspath(self.flagfile)}", "--mode=train",
            f"--workdir={os.path.abspath(self.cell_dir(cell))}", *self.cell_flags(cell),
            f"--verbose={verbose}", *self.grid.variant_flags[cell.variant])

    def finished(self, cell: Cell) -> dict | None:
        """cell.json of a finished cell, or None."""
        path = os.path.join(self.cell_dir(cell), CELL_JSON)
        if not os.path.exists(path) or not os.path.exists(
                os.path.join(self.cell_dir(cell), "metrics.json")):
            return None
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        return record if record.get("flags") == self._recorded_flags(cell) else None

    def _recorded_flags(self, cell: Cell) -> list[str]:
        flags = self.grid.variant_flags[cell.variant]
        return [*self.cell_flags(cell), *(flags if flags is not None else ["logreg"])]

    # -- Set-up -----------------------------------------------------------------

    def check_and_record(self) -> None:
        """Writes study.json and cells.cfg; a study directory that holds cells
        run with other shared flags is an error naming them. Flags added to the
        code since, at their defaults, are not a difference: the finished cells
        stay valid and study.json records the new list."""
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, "study.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                before = json.load(f).get("shared_flags", [])
            if before != self.shared and grid_lib.flags_added_since(before, self.shared) is None:
                changed = sorted(set(self.shared).symmetric_difference(before))
                raise ConfigError(
                    f"--study_dir={self.root}: its cells were run with other flags "
                    f"({', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}); "
                    "use those flags, or another --study_dir")
        grid = self.grid
        record = {"shared_flags": self.shared,
                  "grid": {"folds": grid.folds, "seeds": grid.seeds,
                           "budgets": grid.budgets, "variants": grid.variants,
                           "train_seeds": grid.train_seeds,
                           "variant_flags": {v: grid.variant_flags[v]
                                             for v in grid.variants}}}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        with open(self.flagfile, "w", encoding="utf-8") as f:
            f.write("# The shared flags of this study's cells (written by --mode=study).\n")
            f.write("\n".join(self.shared) + "\n")

    def prepare(self, cell: Cell) -> None:
        """Prepares the records of `cell`'s group once (one worker at a time)."""
        with self._locks_lock:
            lock = self._group_locks.setdefault(cell.records_key, threading.Lock())
        with lock:
            self._prepare(cell)

    def _prepare(self, cell: Cell) -> None:
        group = self.group_dir(cell)
        if os.path.exists(os.path.join(group, "data", "dataset.json")):
            return
        os.makedirs(group, exist_ok=True)
        log_path = os.path.join(group, "prepare.log")
        code = _run_logged(_main_command(
            f"--flagfile={os.path.abspath(self.flagfile)}", "--mode=prepare",
            f"--workdir={os.path.abspath(group)}", *self.cell_flags(cell)),
            log_path, show_progress=False)
        if code:
            raise StudyError(f"prepare of {cell.records_key} failed (exit {code}); "
                             f"see {log_path}")

    # -- Cells ------------------------------------------------------------------

    def run_cell(self, cell: Cell) -> dict:
        """Runs one cell; returns its cell.json record (with `returncode`)."""
        workdir = self.cell_dir(cell)
        if os.path.isdir(workdir):
            # Left by an interrupted run: start this cell from scratch.
            shutil.rmtree(workdir)
        os.makedirs(workdir)
        started = time.time()
        if self.grid.variant_flags[cell.variant] is None:
            code = self._run_logreg(cell)
        else:
            link = os.path.join(workdir, "data")
            if not os.path.exists(link):
                os.symlink(os.path.join("..", "data"), link)
            code = _run_logged(self.train_command(cell),
                               os.path.join(workdir, "train.log"), self.on_terminal)
        record = {"fold": cell.fold, "seed": cell.seed, "budget": cell.budget,
                  "variant": cell.variant, "run": cell.run,
                  "flags": self._recorded_flags(cell),
                  "command": (self.train_command(cell)[1:]
                              if self.grid.variant_flags[cell.variant] is not None
                              else None),
                  "seconds": time.time() - started, "returncode": code,
                  **_provenance()}
        if code == 0:
            with open(os.path.join(workdir, CELL_JSON), "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
        return record

    def _run_logreg(self, cell: Cell) -> int:
        from i2a_tf.study.logreg import logreg_metrics
        tree = config_to_dict(self.config)
        tree["workdir"] = self.group_dir(cell)
        tree["data"].update(test_fold=cell.fold, seed=cell.seed, label_fraction=cell.budget)
        metrics = logreg_metrics(config_from_dict(tree))
        metrics["split"] = "test"
        with open(os.path.join(self.cell_dir(cell), "metrics.json"), "w",
                  encoding="utf-8") as f:
            json.dump(metrics, f, indent=2, allow_nan=True)
        return 0


def _outcome(study: Study, cell: Cell, record: dict) -> str:
    """The finished cell's figure on the study's metric (its results.csv row),
    for its progress line (a development study never shows the test
    speakers' UAR)."""
    from i2a_tf.study.results import cell_row
    metric = study.config.study.study_metric
    value = cell_row(study, cell, record)[metric]
    name = "val UAR" if metric == "val_uar" else "UAR"
    return f"{name} {100 * value:5.1f}" if value == value else f"{name}   –"


def _provenance() -> dict:
    """The code commit and the environment that train a cell (cell.json)."""
    from i2a_tf.study.results import code_commit, environment
    return {"commit": code_commit(), "environment": environment()}


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _estimate_left(pending: list[Cell], seconds_by_variant: dict[str, list[float]],
                   workers: int = 1) -> str:
    """Mean seconds per variant so far, summed over the pending cells, over
    the workers (cells of parallel workers run slower each; the means include
    that)."""
    known = [s for values in seconds_by_variant.values() for s in values]
    if not pending:
        return "0:00:00"
    if not known:
        return "?"
    overall = float(np.mean(known))
    return _clock(sum(np.mean(seconds_by_variant[c.variant])
                      if seconds_by_variant.get(c.variant) else overall
                      for c in pending) / workers)


def run_study(config: Config) -> dict:
    """Runs every unfinished cell of the grid, then writes the results and the
    report; returns {output name: path}. Raises StudyError naming the logs of
    the cells that failed (after writing the results of the others)."""
    study = Study(config)
    if not config.study.study_report_only:
        # Only training mixes cells of different flags: a report of finished
        # cells may be rebuilt by a later commit whose flags grew.
        study.check_and_record()
    cells = study.grid.cells()
    done = {c: study.finished(c) for c in cells}
    pending = [c for c in cells if done[c] is None]
    seconds_by_variant: dict[str, list[float]] = {}
    for cell, record in done.items():
        if record is not None:
            seconds_by_variant.setdefault(cell.variant, []).append(record["seconds"])
    total = len(cells)
    runs = (f" x {study.grid.train_seeds} training runs" if study.grid.train_seeds
            else "")
    print(f"study {study.root}: {total} cells ({len(study.grid.folds)} folds x "
          f"{len(study.grid.seeds)} seeds x {len(study.grid.budgets)} budgets x "
          f"{len(study.grid.variants)} variants{runs}), {total - len(pending)} already "
          "finished", flush=True)
    failed: list[tuple[Cell, str]] = []
    started = time.time()

    def run(cell: Cell) -> dict:
        study.prepare(cell)
        return study.run_cell(cell)

    if not config.study.study_report_only and pending:
        finished = total - len(pending)
        left = list(pending)
        pool = concurrent.futures.ThreadPoolExecutor(study.workers)
        futures = {pool.submit(run, cell): cell for cell in pending}
        # SIGTERM is handled as Ctrl-C (signal handlers live in the main thread:
        # a study run from another thread keeps the handler it has).
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_interrupted)
        try:
            for future in concurrent.futures.as_completed(futures):
                cell = futures[future]
                left.remove(cell)
                finished += 1
                try:
                    record = future.result()
                except StudyError as error:  # a prepare failed
                    failed.append((cell, str(error)))
                    print(f"[{finished}/{total}] {cell.describe()} FAILED: {error}",
                          flush=True)
                    continue
                if record["returncode"]:
                    where = os.path.join(study.cell_dir(cell), "train.log")
                    failed.append((cell, where))
                    outcome = f"FAILED (exit {record['returncode']}, see {where})"
                else:
                    seconds_by_variant.setdefault(cell.variant, []).append(
                        record["seconds"])
                    outcome = _outcome(study, cell, record)
                print(f"[{finished:>{len(str(total))}}/{total}] {cell.describe():54s} "
                      f"{outcome}  ({record['seconds']:.0f} s)  elapsed "
                      f"{_clock(time.time() - started)}, left ~"
                      f"{_estimate_left(left, seconds_by_variant, study.workers)}",
                      flush=True)
        except BaseException:
            # Ctrl-C or SIGTERM: start no more cells, end the running ones (Ctrl-C
            # reached them through the terminal's process group; SIGTERM did not).
            pool.shutdown(wait=False, cancel_futures=True)
            stopped = _stop_children()
            if stopped:
                print(f"study stopped: ended {stopped} running cell process(es); "
                      "run the same command again to continue", flush=True)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        pool.shutdown()
    from i2a_tf.study.results import write_results
    outputs = write_results(study)
    print(f"results: {outputs['results_md']}; report: {outputs['report_html']}",
          flush=True)
    if failed:
        raise StudyError(f"{len(failed)} of {total} cells failed: " + "; ".join(
            f"{cell.describe()} (see {where})" for cell, where in failed))
    return outputs


__all__ = ["BASELINE", "LABELS", "Study", "StudyError", "StudyInterrupted", "run_study"]
