"""Prepare at scale: wall time and peak memory of the local runner vs Beam.

Generates a synthetic speech corpus of `--clips` short clips (written one file
at a time, never held in memory; kept and reused across runs in `--corpus_dir`)
and a small face corpus, then runs `python -m i2a_tf.main --mode=prepare` once
per runner in a fresh process:

  local        --prepare_runner=local
  beam         --prepare_runner=beam, DirectRunner in process (the default)
  beam_mp1     DirectRunner, --direct_running_mode=multi_processing, 1 worker
  beam_mp2     the same with --direct_num_workers=2

Peak memory is sampled from /proc every 0.2 s over the whole process tree
(Beam's worker processes included): `peak_tree_rss_mb` is the largest sum over
the tree, `peak_process_rss_mb` the largest single process (Linux only). Prints
one JSON object per run and a summary table.

  python tools/bench_prepare.py [--clips 50000] [--runs local,beam,beam_mp1,beam_mp2]
      [--corpus_dir /tmp/i2a_bench_prepare/corpus] [--workdir /tmp/i2a_bench_prepare]

Run it with the Python that has the Beam extra (`pip install '.[beam]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASSES = ("anger", "disgust", "fear", "happiness", "sadness")
SPEAKERS = 20
RUNS = {
    "local": ["--prepare_runner=local"],
    "beam": ["--prepare_runner=beam"],
    "beam_mp1": ["--prepare_runner=beam", "--beam_pipeline_args=--runner=DirectRunner "
                 "--direct_running_mode=multi_processing --direct_num_workers=1"],
    "beam_mp2": ["--prepare_runner=beam", "--beam_pipeline_args=--runner=DirectRunner "
                 "--direct_running_mode=multi_processing --direct_num_workers=2"],
}
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def generate_corpus(corpus_dir: str, clips: int, seconds: tuple[float, float]) -> None:
    """`clips` speech clips over SPEAKERS speakers x CLASSES, plus 50 faces;
    skipped when `corpus_dir` already holds a corpus of that size."""
    from i2a_tf.data import synthetic

    marker = os.path.join(corpus_dir, "corpus.json")
    wanted = {"clips": clips, "seconds": list(seconds)}
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as handle:
            if json.load(handle) == wanted:
                return
    shutil.rmtree(corpus_dir, ignore_errors=True)
    per_cell = max(1, clips // (SPEAKERS * len(CLASSES)))
    start = time.perf_counter()
    synthetic.generate_speech_corpus(
        os.path.join(corpus_dir, "speech"), classes=CLASSES, num_speakers=SPEAKERS,
        clips_per_speaker_per_class=per_cell, duration_s=seconds, seed=0)
    synthetic.generate_face_corpus(
        os.path.join(corpus_dir, "faces"), classes=CLASSES, num_subjects=5,
        images_per_subject_per_class=2, seed=0)
    print(f"generated {per_cell * SPEAKERS * len(CLASSES)} clips in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump(wanted, handle)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8") as handle:
                # The command name may hold spaces: the ppid follows its ')'.
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm", encoding="utf-8") as handle:
            return int(handle.read().split()[1]) * _PAGE_KB / 1024.0
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_rss_mb(root: int) -> tuple[float, float]:
    """(sum, largest) resident memory in MB over `root` and its descendants."""
    tree, pending, sizes = _children(), [root], []
    while pending:
        pid = pending.pop()
        sizes.append(_rss_mb(pid))
        pending.extend(tree.get(pid, []))
    return sum(sizes), max(sizes)


def run_prepare(name: str, corpus_dir: str, workdir: str) -> dict:
    """One `--mode=prepare` in a fresh process: wall time and peak memory."""
    command = [sys.executable, "-m", "i2a_tf.main", "--mode=prepare",
               f"--workdir={os.path.join(workdir, name)}", "--speech_corpus=folder",
               f"--speech_dir={os.path.join(corpus_dir, 'speech')}",
               "--face_corpus=folder", f"--face_dir={os.path.join(corpus_dir, 'faces')}",
               f"--classes={','.join(CLASSES)}", *RUNS[name]]
    log_path = os.path.join(workdir, f"{name}.log")
    start = time.perf_counter()
    peak_tree = peak_process = 0.0
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while process.poll() is None:
            total, largest = tree_rss_mb(process.pid)
            peak_tree, peak_process = max(peak_tree, total), max(peak_process, largest)
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{name}: prepare exited {process.returncode}; see {log_path}")
    with open(os.path.join(workdir, name, "data", "dataset.json"), encoding="utf-8") as f:
        splits = json.load(f)["splits"]
    return {"run": name, "clips": sum(splits[s]["num_examples"] for s in
                                      ("train_labeled", "train_unlabeled", "val", "test")),
            "wall_s": round(seconds, 1), "peak_tree_rss_mb": round(peak_tree),
            "peak_process_rss_mb": round(peak_process), "command": " ".join(command)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=50000)
    parser.add_argument("--min_seconds", type=float, default=0.6)
    parser.add_argument("--max_seconds", type=float, default=1.0)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--workdir", default="/tmp/i2a_bench_prepare")
    parser.add_argument("--corpus_dir", default="",
                        help="Default: <workdir>/corpus.")
    args = parser.parse_args()
    runs = args.runs.split(",")
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        print(f"error: --runs={args.runs}: unknown {', '.join(unknown)}; choose from "
              f"{', '.join(RUNS)}", file=sys.stderr)
        return 2
    corpus_dir = args.corpus_dir or os.path.join(args.workdir, "corpus")
    os.makedirs(args.workdir, exist_ok=True)
    generate_corpus(corpus_dir, args.clips, (args.min_seconds, args.max_seconds))
    results = []
    for name in runs:
        results.append(run_prepare(name, corpus_dir, args.workdir))
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(os.path.join(args.workdir, name), ignore_errors=True)
    print(f"\n| run | clips | wall (s) | peak RSS, process tree (MB) | "
          f"largest process (MB) |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['clips']} | {r['wall_s']} | {r['peak_tree_rss_mb']} | "
              f"{r['peak_process_rss_mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
