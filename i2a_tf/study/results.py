"""The study's outputs from its finished cells: results.csv, results.md, the
plots, the translations to look at and listen to, and report.html."""

from __future__ import annotations

import collections
import datetime
import json
import os
import platform
import subprocess
import sys

import numpy as np

from i2a_tf.study import report, statistics
from i2a_tf.study.grid import LABELS, Cell

REPORT_BUDGET = 0.1  # the curves and translations come from the budget nearest this


def _last(logs: dict, key: str) -> float:
    values = logs.get(key) or []
    return float(values[-1]) if values else float("nan")


def cell_row(study, cell: Cell, record: dict) -> dict:
    """One results.csv row of a finished cell (`record`: its cell.json)."""
    workdir = study.cell_dir(cell)
    with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    logs = _history(workdir).get("logs", {})
    pseudo = metrics.get("last_pseudo_label_refresh", {})
    return {"fold": cell.fold, "seed": cell.seed, "budget": cell.budget,
            "variant": cell.variant, "run": max(cell.run, 0),
            "train_seed": _train_seed(study, cell, metrics), "uar": metrics["uar"], "wa": metrics["wa"],
            "macro_f1": metrics["macro_f1"], "val_uar": _val_uar(metrics, logs),
            "pseudo_label_accuracy": float(pseudo.get("pseudo_label_accuracy", np.nan)),
            "pseudo_label_coverage": float(pseudo.get("pseudo_label_coverage", np.nan)),
            "mean_density_weight": _last(logs, "mean_density_weight"),
            "translated_accuracy": _last(logs, "translated_accuracy"),
            "admitted_fraction": _after_warmup_mean(logs, "admitted_fraction"),
            "judge_admitted_fraction": _after_warmup_mean(logs, "judge_admitted_fraction"),
            "translation_spread": translation_spread(
                os.path.join(workdir, "translations.npz")),
            "seconds": float(record["seconds"]),
            "confusion": statistics.confusion_text(metrics["confusion_matrix"])
            if "confusion_matrix" in metrics else ""}


def _after_warmup_mean(logs: dict, key: str) -> float:
    """The mean of `key` over the epochs whose auxiliary weight is above 0
    (after warm-up, when the auxiliary terms act); NaN without such epochs."""
    values, weights = logs.get(key) or [], logs.get("aux_weight") or []
    acting = [float(v) for v, w in zip(values, weights) if w > 0]
    return float(np.mean(acting)) if acting else float("nan")


def translation_spread(npz_path: str) -> float:
    """How varied G's translations of one class are, against real clips of it:
    the mean over classes of (the per-bin standard deviation over that class's
    translations, averaged over bins) / (the same over its real labeled clips),
    from a run's translations.npz. 1: as varied as real speech; near 0: one
    output per class, whatever the face (mode collapse). Classes with fewer
    than two real clips, or whose real clips are all identical (no spread to
    compare with), are left out; NaN without the file or such a class."""
    if not os.path.exists(npz_path):
        return float("nan")
    with np.load(npz_path, allow_pickle=False) as data:
        translated, real = data["translated"], data["real"]
    ratios = []
    for fakes, clips in zip(translated, real):
        clips = clips[~np.all(np.isnan(clips), axis=tuple(range(1, clips.ndim)))]
        if len(clips) < 2 or len(fakes) < 2:
            continue
        real_spread = float(np.mean(np.std(clips, axis=0)))
        if real_spread > 0:
            ratios.append(float(np.mean(np.std(fakes, axis=0))) / real_spread)
    return float(np.mean(ratios)) if ratios else float("nan")


def _val_uar(metrics: dict, logs: dict) -> float:
    """The validation speakers' UAR at the last epoch (a network cell's
    history), or the logistic regression's; NaN without validation speakers."""
    return float(metrics.get("val_uar", _last(logs, "val_uar")))


def _train_seed(study, cell: Cell, metrics: dict) -> int:
    """The training seed the cell's run recorded (metrics.json's switches),
    --seed for a cell trained before it was recorded (then it was the
    training seed), -1 for logreg (no training)."""
    if study.grid.variant_flags[cell.variant] is None:
        return -1
    return int(metrics.get("switches", {}).get("train_seed", cell.seed))


def _history(workdir: str) -> dict:
    path = os.path.join(workdir, "history.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def code_commit() -> str:
    """The code's git commit (with '+changes' when the tree is dirty), if known."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


# The packages whose versions can change a cell's numbers (a reinstalled
# machine that resolves a newer numpy or keras trains other cells).
ENVIRONMENT_PACKAGES = ("tensorflow", "keras", "numpy", "scipy", "scikit-learn",
                        "soundfile")


def environment() -> str:
    """The CPU model, Python and the versions of ENVIRONMENT_PACKAGES, as one
    line (what a cell was trained with; a package that is not installed reads
    'absent'). The CPU is there because TensorFlow's oneDNN kernels pick their
    instructions (AVX2, AVX-512, AMX) by it, and the sums they round differ."""
    from importlib import metadata
    parts = [f"cpu {_cpu_model()}", f"python {platform.python_version()}"]
    for name in ENVIRONMENT_PACKAGES:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} absent")
    return ", ".join(parts)


# Instruction sets oneDNN dispatches on (a virtual machine's model name is
# often generic: "Intel(R) Xeon(R) Processor").
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")


def _cpu_model() -> str:
    """The CPU's model name and which of CPU_FLAGS it has (Linux), else what
    platform knows."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    present = set(line.split(":", 1)[1].split())
                    flags = [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    if not model:
        model = platform.processor() or platform.machine() or "unknown"
    return f"{model} ({' '.join(flags) or 'none of ' + ' '.join(CPU_FLAGS)})"


def _translation_cell(study, budget: float) -> Cell | None:
    """The cell whose translations the report shows: the first fold and seed at
    `budget`, variant `full` if in the grid, else the first translating one."""
    grid = study.grid
    translating = [v for v in grid.variants
                   if "--use_translation" in (grid.variant_flags[v] or ())]
    if not translating:
        return None
    variant = "full" if "full" in translating else translating[0]
    for fold in grid.folds:
        for seed in grid.seeds:
            cell = Cell(fold, seed, budget, variant, grid.runs[0])
            if os.path.exists(os.path.join(study.cell_dir(cell), "translations.npz")):
                return cell
    return None


def write_results(study) -> dict:
    """Writes every output of the study from the cells finished so far;
    returns {name: path}."""
    root, grid = study.root, study.grid
    cells = grid.cells()
    # cell.json of every finished cell, read once.
    finished = {c: r for c, r in ((c, study.finished(c)) for c in cells) if r is not None}
    rows = [cell_row(study, c, r) for c, r in finished.items()]
    out = {name: os.path.join(root, name) for name in (
        "results.csv", "results.md", "uar_vs_budget.png", "paired_delta.png",
        "training_curves.png", "report.html", "report.png")}
    out = {key.replace(".", "_"): value for key, value in out.items()}
    statistics.write_results_csv(rows, out["results_csv"])
    shown = [a for a in sys.argv[1:] if a.lstrip("-") not in (
        "study_report_only", "study_report_only=true", "study_report_only=True")]
    commits, environments = (
        collections.Counter(r.get(key, "not recorded") for r in finished.values())
        for key in ("commit", "environment"))
    header = [f"Command: `python -m i2a_tf.main {' '.join(shown)}`",
              f"Report written by commit: `{code_commit()}`",
              "Cells trained at: " + ", ".join(f"`{c}` ({n} cells)"
                                               for c, n in commits.items()),
              "Cells trained with: " + "; ".join(f"{e} ({n} cells)"
                                                 for e, n in environments.items()),
              f"Written: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
              f"Cells finished: {len(rows)} of {len(cells)}"]
    metric = study.config.study.study_metric
    markdown = statistics.results_markdown(rows, grid.variants, labels=LABELS,
                                           header_lines=header, metric=metric,
                                           class_names=study.config.data.classes)
    with open(out["results_md"], "w", encoding="utf-8") as f:
        f.write(markdown)
    images = []
    if rows:
        report.plot_uar_vs_budget(rows, out["uar_vs_budget_png"], grid.variants, metric)
        images.append((f"{statistics.METRIC_NAMES[metric].capitalize()} against the "
                       "label budget (mean ± std over folds and seeds)",
                       out["uar_vs_budget_png"]))
        if any(r["variant"] == "supervised" for r in rows) and len(grid.variants) > 1:
            report.plot_paired_delta(rows, out["paired_delta_png"], grid.variants, metric)
            images.append(("Paired difference to supervised-only per fold and seed",
                           out["paired_delta_png"]))
    budget = min(grid.budgets, key=lambda b: abs(b - REPORT_BUDGET))
    histories = {}
    for cell in finished:
        if cell.budget == budget:
            history = _history(study.cell_dir(cell))
            if history:
                histories.setdefault(cell.variant, []).append(history)
    if histories:
        report.plot_training_curves(histories, out["training_curves_png"], metric)
        images.append((f"Training curves at budget {100 * budget:g} % (mean over "
                       "folds and seeds)", out["training_curves_png"]))
    audio = []
    source = _translation_cell(study, budget)
    if source is not None:
        rendered = report.render_translations(
            os.path.join(study.cell_dir(source), "translations.npz"), root,
            study.config.frontend)
        for entry in rendered:
            images.append((f"Translated faces, class {entry['class']} (top) beside "
                           f"real clips (bottom); {source.describe()}", entry["png"]))
            audio.append((f"{entry['class']}: translations, then a real clip "
                          "(Griffin-Lim)", entry["wav"]))
    report.write_report_html(out["report_html"], title="i2a_tf study",
                             markdown_text=markdown, images=images, audio=audio)
    if not report.screenshot(out["report_html"], out["report_png"]):
        out.pop("report_png")
    return out
