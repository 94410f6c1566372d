"""The study's pictures, sounds and page: plots (matplotlib, Agg), translated
spectrograms beside real ones, their Griffin-Lim audio, report.html with the
images embedded, and a headless-browser screenshot of it."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import subprocess
import tempfile
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from i2a_tf.config import FrontEndConfig  # noqa: E402
from i2a_tf.data.frontend import BandStatistics  # noqa: E402
from i2a_tf.data.inversion import logmel_to_waveform, write_wav  # noqa: E402
from i2a_tf.study import statistics  # noqa: E402

CURVES = (("labeled_accuracy", "labeled accuracy (C, train batches)"),
          ("test_uar", "test UAR (saved weights; analysis only)"),
          ("aux_weight", "ramp r(t) of the auxiliary terms"),
          ("translated_accuracy", "translated accuracy (C on G's output)"),
          ("judge_accuracy", "translated accuracy by the frozen judge"),
          ("mean_density_weight", "mean weight of translations in C's loss"),
          ("pseudo_label_accuracy", "pseudo-label accuracy (last refresh)"),
          ("self_training_accuracy", "self-training accuracy at that coverage"),
          ("consistency_target_accuracy", "consistency target accuracy"))
AUDIO_TRANSLATIONS = 3  # translations per class in translated_<class>.wav
_GAP_SECONDS = 0.4


def _colours(order: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {variant: cmap(i % 10) for i, variant in enumerate(order)}


def plot_uar_vs_budget(rows: Sequence[dict], path: str, order: Sequence[str],
                       metric: str = "uar") -> None:
    """Mean `metric` (points; test UAR unless the study's metric says
    otherwise) against the labeled budget, one line per variant, error bars ±
    one std over folds and seeds (each the mean of its training runs)."""
    order = statistics.table_order(order)
    colours = _colours(order)
    budgets = sorted({r["budget"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    offsets = np.linspace(-0.12, 0.12, len(order)) if len(order) > 1 else [0.0]
    unit_means = [statistics.unit_means(rows, budget, metric) for budget in budgets]
    for offset, variant in zip(offsets, order):
        xs, means, stds = [], [], []
        for i, by_unit in enumerate(unit_means):
            values = [100 * v for (_, _, name), v in by_unit.items() if name == variant]
            if values:
                xs.append(i + offset)
                means.append(np.mean(values))
                stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        if xs:
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3,
                        color=colours[variant], label=variant)
    ax.set_xticks(range(len(budgets)), [f"{100 * b:g} %" for b in budgets])
    ax.set_xlim(-0.5, len(budgets) - 0.5)
    ax.set_xlabel("labeled training clips (budget)")
    ax.set_ylabel(f"{statistics.METRIC_NAMES[metric]} (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)


def plot_paired_delta(rows: Sequence[dict], path: str, order: Sequence[str],
                      metric: str = "uar") -> None:
    """Per budget: each variant's `metric` minus supervised-only's on the same
    (fold, seed), one dot per pair (colour = fold, marker = seed), with the
    mean and its 95 % bootstrap interval (the table's)."""
    others = [v for v in statistics.table_order(order) if v != statistics.BASELINE]
    budgets = sorted({r["budget"] for r in rows})
    fig, axes = plt.subplots(len(budgets), 1, figsize=(max(6.0, 1.3 * len(others) + 2), 4.2 * len(budgets)),
                             squeeze=False)
    folds = sorted({r["fold"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    fold_colour = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(folds)}
    markers = "osD^vP*X"
    seed_marker = {s: markers[i % len(markers)] for i, s in enumerate(seeds)}
    for ax, budget in zip(axes[:, 0], budgets):
        for x, variant in enumerate(others):
            pairs = statistics.paired_differences(rows, variant, budget, metric=metric)
            if not pairs:
                continue
            jitter = np.linspace(-0.25, 0.25, len(pairs)) if len(pairs) > 1 else [0.0]
            for dx, (fold, seed, delta) in zip(jitter, pairs):
                ax.scatter(x + dx, 100 * delta, color=fold_colour[fold],
                           marker=seed_marker[seed], s=22, alpha=0.85, zorder=3)
            deltas = [d for _, _, d in pairs]
            low, high = statistics.bootstrap_interval(deltas)
            mean = np.mean(deltas)
            ax.errorbar([x + 0.38], [100 * mean], yerr=[[100 * (mean - low)], [100 * (high - mean)]],
                        color="black", marker="_", markersize=14, capsize=4, zorder=4)
        ax.axhline(0.0, color="grey", lw=1)
        ax.set_xticks(range(len(others)), others, rotation=20, ha="right")
        ax.set_ylabel(f"Δ {statistics.METRIC_NAMES[metric]} vs supervised (points)")
        ax.set_title(f"budget {100 * budget:g} %: dots per (fold, seed), black: "
                     "mean and 95 % CI", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker="o", color=fold_colour[f], label=f"fold {f}")
               for f in folds]
    handles += [plt.Line2D([], [], ls="", marker=seed_marker[s], color="grey",
                           label=f"seed {s}") for s in seeds]
    axes[0, 0].legend(handles=handles, fontsize=7, ncol=2, loc="best")
    _save(fig, path)


def plot_training_curves(histories: dict[str, list[dict]], path: str,
                         metric: str = "uar") -> None:
    """Per variant, the mean over its runs (folds, seeds) of each of CURVES
    per epoch, from the runs' history.json. A variant without a curve (e.g.
    supervised has no translations) is left out of that panel."""
    fig, axes = plt.subplots(3, 3, figsize=(15, 10))
    colours = _colours(statistics.table_order(list(histories)))
    curves = CURVES if metric == "uar" else tuple(
        ("val_uar", "validation UAR (saved weights)") if key == "test_uar"
        else (key, title) for key, title in CURVES)  # development: no test curve
    for ax, (key, title) in zip(axes.ravel(), curves):
        drawn = False
        for variant, runs in histories.items():
            series: dict[int, list[float]] = {}
            for history in runs:
                values = history.get("logs", {}).get(key)
                if not values:
                    continue
                epochs = list(history.get("epochs") or range(1, len(values) + 1))
                # Keras starts a key's list at the first epoch that logs it
                # (pseudo-label accuracy: after warm-up): align from the end.
                for epoch, value in zip(epochs[len(epochs) - len(values):], values):
                    if value is not None and np.isfinite(value):
                        series.setdefault(int(epoch), []).append(float(value))
            if not series:
                continue
            epochs = sorted(series)
            ax.plot(epochs, [np.mean(series[e]) for e in epochs], marker=".",
                    color=colours[variant], label=f"{variant} ({len(runs)} runs)")
            drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        if key == "mean_density_weight":
            ax.set_yscale("symlog", linthresh=1e-4)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no run logs this", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    _save(fig, path)


def render_translations(npz_path: str, out_dir: str, frontend: FrontEndConfig,
                        iterations: int = 60) -> list[dict]:
    """translated_<class>.png and .wav for every class of a run's translations.npz.

    png: translated spectrograms (top row) above real labeled clips of the class
    (bottom row; empty panels where the class has fewer). wav: the first
    AUDIO_TRANSLATIONS translations, then one real clip, each through the same
    mel -> Griffin-Lim inversion, with short silences between.
    Returns [{"class", "png", "wav", "translations", "real"}].
    """
    with np.load(npz_path, allow_pickle=False) as data:
        translated, real = data["translated"], data["real"]
        names = [str(n) for n in data["class_names"]]
        stats = BandStatistics(mean=data["band_mean"], std=data["band_std"])
    os.makedirs(out_dir, exist_ok=True)
    limits = np.nanpercentile(np.concatenate([translated.ravel(), real.ravel()]), [1, 99])
    gap = np.zeros(int(_GAP_SECONDS * frontend.sample_rate), np.float32)
    out = []
    for c, name in enumerate(names):
        slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name)
        columns = translated.shape[1]
        fig, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 4.6), squeeze=False)
        for row, (images, label) in enumerate(((translated[c], "translated"),
                                               (real[c], "real"))):
            for j in range(columns):
                ax = axes[row, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if np.all(np.isnan(images[j])):
                    ax.text(0.5, 0.5, "no clip", ha="center", va="center",
                            transform=ax.transAxes, color="grey")
                    continue
                ax.imshow(images[j], origin="lower", aspect="auto", cmap="magma",
                          vmin=limits[0], vmax=limits[1])
                ax.set_title(f"{label} {j + 1}", fontsize=8)
        fig.suptitle(f"{name}: translated faces (top), real clips (bottom); "
                     "log-mel, low bands at the bottom", fontsize=10)
        png = os.path.join(out_dir, f"translated_{slug}.png")
        _save(fig, png, dpi=72)  # spectrogram texture compresses badly: ~0.4 MB each
        pieces = []
        voices = [translated[c, j] for j in range(min(AUDIO_TRANSLATIONS, columns))]
        reals = [clip for clip in real[c] if not np.all(np.isnan(clip))][:1]
        for logmel in voices + reals:
            pieces += [logmel_to_waveform(logmel, stats, frontend, iterations), gap]
        wav = os.path.join(out_dir, f"translated_{slug}.wav")
        write_wav(wav, np.concatenate(pieces), frontend.sample_rate)
        out.append({"class": name, "png": png, "wav": wav,
                    "translations": len(voices), "real": len(reals)})
    return out


def _save(fig, path: str, dpi: int = 110) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# -- report.html -------------------------------------------------------------------

def _inline(text: str) -> str:
    """Escaped text with `code` and **bold** spans."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def markdown_to_html(markdown_text: str) -> str:
    """The subset of Markdown that results.md uses: #-headings, pipe tables,
    '- ' lists and paragraphs (a trailing double space breaks the line)."""
    out, paragraph, table, items = [], [], [], []

    def flush():
        if paragraph:
            out.append("<p>" + "<br>\n".join(_inline(p.strip()) for p in paragraph) + "</p>")
            paragraph.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if table:
            rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
                    for line in table if not re.fullmatch(r"\|?[\s|:-]+\|?", line.strip())]
            head, body = rows[0], rows[1:]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                       + "</tr></thead><tbody>" + "".join(
                           "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                           for row in body) + "</tbody></table>")
            table.clear()

    for line in markdown_text.splitlines():
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.lstrip().startswith("|"):
            if not table:
                flush()
            table.append(line)
        elif line.startswith("- "):
            if not items:
                flush()
            items.append(line[2:])
        elif not line.strip():
            flush()
        else:
            if table or items:
                flush()
            paragraph.append(line)
    flush()
    return "\n".join(out)


_STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 1.5em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.55em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #eee; }
code { background: #f3f3f3; padding: 0 0.2em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
"""


def write_report_html(path: str, title: str, markdown_text: str,
                      images: Sequence[tuple[str, str]] = (),
                      audio: Sequence[tuple[str, str]] = ()) -> None:
    """One page: the tables (from results.md), every image embedded as a data
    URI (the page needs no other file to show them), and an audio player per
    wav, linked by its path relative to the page (audio is large; keep the
    wavs beside the page)."""
    folder = os.path.dirname(os.path.abspath(path))
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             markdown_to_html(markdown_text)]
    if images:
        parts.append("<h2>Plots and translations</h2>")
    for caption, image in images:
        with open(image, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(caption, quote=True)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>"
                     f"{html.escape(caption)}</figcaption></figure>")
    if audio:
        parts.append("<h2>Listen</h2><p>Each file: translations of faces of the class, "
                     "then a real clip of it, all through the same mel &rarr; "
                     "Griffin-Lim inversion (so the real clip shows what the "
                     "inversion itself does to speech).</p>")
    for caption, wav in audio:
        source = os.path.relpath(os.path.abspath(wav), folder)
        parts.append(f"<figure><figcaption>{html.escape(caption)}</figcaption>"
                     f"<audio controls preload='none' src='{html.escape(source, quote=True)}'>"
                     f"</audio></figure>")
    parts.append("</body></html>\n")
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def find_browser() -> str | None:
    """A headless-capable Chromium on PATH (Debian's `chromium` first)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html_path: str, png_path: str, width: int = 1280, height: int = 2400,
               timeout: float = 120.0) -> bool:
    """Renders `html_path` in headless Chromium to `png_path`. Returns False
    (and writes nothing) when no browser is installed or it fails."""
    browser = find_browser()
    if os.path.exists(png_path):
        os.remove(png_path)
    if browser is None:
        return False
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-quic", "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   f"--screenshot={os.path.abspath(png_path)}",
                   "file://" + os.path.abspath(html_path)]
        try:
            subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return os.path.exists(png_path) and os.path.getsize(png_path) > 0
