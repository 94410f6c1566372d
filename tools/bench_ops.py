"""Time and peak memory of the density / graph ops against scikit-learn.

Rows (one JSON list on stdout, progress on stderr):

- task "pseudo_label", N in --sizes (d = 128, k = 10, C = 5, clustered random
  data, --labeled_fraction labeled): graph build + propagation + selection by
  `graph.pseudo_labels_from_embeddings` with method widest_path
  ("i2a_tf_widest_path", min-endpoint edge strengths from the fused kNN + KDE
  pass, Scott bandwidth) and label_spreading ("i2a_tf_label_spreading"), and
  `sklearn.semi_supervised.LabelSpreading(kernel='knn', n_neighbors=10)`
  ("sklearn_label_spreading", up to --sklearn_max_n), all including the kNN
  graph construction; "..._approximate" rows use the approximate kNN search
  (`graph.ApproximateSearch()`, default knobs: lists of >= 128 points, 16
  probed) and report `recall_at_k`, the fraction of the exact k nearest
  neighbours found, on --recall_rows sampled rows (exact: float64 NumPy).
- task "scale", N in --scale (d = 128, k = 10): the approximate graph build
  with node densities, `graph.knn_graph_with_density(approximate=...)`
  ("i2a_tf_approximate_graph", with `recall_at_k`), and the whole approximate
  widest-path pseudo-labelling ("i2a_tf_widest_path_approximate"), one
  timed run after the warm-up; `growth` is the exponent b of time ∝ N^b from
  the previous size (1 = linear).
- task "kde", N = --kde_size queries against N bank rows, d = 128:
  `density.kde_log_prob` ("i2a_tf_kde") versus exact sklearn
  `KernelDensity(bandwidth=h, leaf_size=N)` ("sklearn_kde"; its default
  leaf_size=40 is wrong by tens of nats in 128-d).

Each (task, N, impl) runs in a fresh subprocess: imports, data generation, one
warm-up call (XLA compilation), then --repeats timed calls; `median_s` is their
median. Memory comes from `resource.getrusage(RUSAGE_SELF).ru_maxrss` (the
process's peak resident set size), relative to the resident set size after
imports and data generation: `peak_mib` is the peak during the timed calls
(the peak is reset after the warm-up by writing 5 to /proc/self/clear_refs,
so transient compile-time memory that was given back is not counted; what
the warm-up kept, such as compiled code and allocator caches, still is),
`peak_with_compile_mib` the peak over warm-up and timed calls.
`speedup_vs_sklearn` (ours) = sklearn median / our
median within the same run. `accuracy` is the pseudo-label accuracy on
unlabeled points (points in clusters without any label count as errors);
ours also report the fraction of unlabeled points selected (top half per
class) and the accuracy on those.

  python tools/bench_ops.py                       # N = 2k, 20k, 100k; KDE 5k
  python tools/bench_ops.py --sizes 2000 --repeats 2 --kde_size 2000   # quick
  python tools/bench_ops.py --sizes 20000 --kde_size 0 --impls \
      i2a_tf_widest_path,i2a_tf_widest_path_approximate,sklearn_label_spreading
  python tools/bench_ops.py --sizes "" --kde_size 0 --scale 100000,300000,1000000
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

DIM = 128
NUM_NEIGHBOURS = 10
NUM_CLASSES = 5
CLUSTERS_PER_CLASS = 4
PSEUDO_LABEL_IMPLS = (
    "i2a_tf_widest_path",
    "i2a_tf_label_spreading",
    "i2a_tf_widest_path_approximate",
    "i2a_tf_label_spreading_approximate",
    "sklearn_label_spreading",
)
SCALE_IMPLS = ("i2a_tf_approximate_graph", "i2a_tf_widest_path_approximate")
KDE_IMPLS = ("i2a_tf_kde", "sklearn_kde")


def _max_rss_mib():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib():
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return _max_rss_mib()


def _reset_peak_rss():
    """Sets the peak RSS to the current RSS (Linux ≥ 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def clustered_embeddings(num_points, labeled_fraction, seed=0):
    """Gaussian clusters, several per class, with a fraction of labels kept.

    Returns `(embeddings [N, 128] float32, labels [N] int32 with −1 for
    unlabeled, classes [N] int32 true class)`.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(NUM_CLASSES * CLUSTERS_PER_CLASS, DIM)).astype(np.float32)
    clusters = rng.integers(0, len(centres), num_points)
    classes = (clusters % NUM_CLASSES).astype(np.int32)
    embeddings = centres[clusters] + rng.normal(size=(num_points, DIM)).astype(np.float32)
    labeled = rng.random(num_points) < labeled_fraction
    # Every class gets at least one label so every method sees all C classes.
    for c in range(NUM_CLASSES):
        labeled[np.flatnonzero(classes == c)[0]] = True
    labels = np.where(labeled, classes, -1).astype(np.int32)
    return embeddings.astype(np.float32), labels, classes


def recall_at_k(embeddings, indices, num_rows, seed=0):
    """Fraction of the exact k nearest neighbours listed, on sampled rows.

    Args:
      embeddings: `[N, d]` float32.
      indices: `[N, k]` int32, the graph to check.
      num_rows: Python int, rows sampled (all when ≥ N).

    Returns:
      Python float in [0, 1]; the exact neighbours come from float64
      distances of the sampled rows to all N points, in blocks.
    """
    import numpy as np

    num_points, k = indices.shape
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(num_points, min(num_rows, num_points), replace=False))
    points = embeddings.astype(np.float64)
    squared_norms = np.sum(points**2, axis=1)
    found = []
    for start in range(0, len(rows), 64):
        block = rows[start:start + 64]
        distances_sq = squared_norms[block, None] + squared_norms[None, :] - 2.0 * (
            points[block] @ points.T
        )
        distances_sq[np.arange(len(block)), block] = np.inf
        exact = np.argpartition(distances_sq, k - 1, axis=1)[:, :k]
        found.append((indices[block][:, :, None] == exact[:, None, :]).any(axis=2))
    return float(np.mean(np.concatenate(found)))


def _make_runner(task, impl, num_points, labeled_fraction, recall_rows):
    """Returns (run() -> result, extra_fields(result) -> dict)."""
    import numpy as np

    if task == "pseudo_label":
        embeddings, labels, classes = clustered_embeddings(num_points, labeled_fraction)
        unlabeled = labels < 0

        def accuracy(predicted):
            return {
                "accuracy": round(float(np.mean(predicted[unlabeled] == classes[unlabeled])), 4)
            }

        def accuracy_and_selected(result):
            pseudo_labels, selected = result
            return dict(
                accuracy(pseudo_labels),
                selected_fraction=round(float(np.mean(selected[unlabeled])), 4),
                selected_accuracy=round(
                    float(np.mean(pseudo_labels[selected] == classes[selected])), 4
                ),
            )

        if impl == "sklearn_label_spreading":
            from sklearn.semi_supervised import LabelSpreading

            def run():
                return LabelSpreading(kernel="knn", n_neighbors=NUM_NEIGHBOURS).fit(
                    embeddings, labels
                )

            return run, lambda model: accuracy(model.transduction_)

        from i2a_tf import graph

        method = impl.removeprefix("i2a_tf_").removesuffix("_approximate")
        approximate = graph.ApproximateSearch() if impl.endswith("_approximate") else None

        def run():
            result = graph.pseudo_labels_from_embeddings(
                embeddings, labels, NUM_CLASSES, method=method, k=NUM_NEIGHBOURS,
                approximate=approximate,
            )
            return result.pseudo_labels.numpy(), result.selected.numpy()

        if approximate is None:
            return run, accuracy_and_selected

        def with_recall(result):
            indices, _ = graph.knn_graph(embeddings, NUM_NEIGHBOURS, approximate=approximate)
            return dict(
                accuracy_and_selected(result),
                recall_at_k=round(recall_at_k(embeddings, indices.numpy(), recall_rows), 4),
            )

        return run, with_recall

    if task == "scale":
        from i2a_tf import density
        from i2a_tf import graph

        embeddings, labels, classes = clustered_embeddings(num_points, labeled_fraction)
        approximate = graph.ApproximateSearch()
        if impl == "i2a_tf_widest_path_approximate":
            unlabeled = labels < 0

            def run():
                result = graph.pseudo_labels_from_embeddings(
                    embeddings, labels, NUM_CLASSES, k=NUM_NEIGHBOURS, approximate=approximate
                )
                return result.pseudo_labels.numpy()

            return run, lambda predicted: {
                "accuracy": round(float(np.mean(predicted[unlabeled] == classes[unlabeled])), 4)
            }

        bandwidth = density.kde_bandwidth(embeddings, "scott")

        def run():
            built = graph.knn_graph_with_density(
                embeddings, NUM_NEIGHBOURS, bandwidth, approximate=approximate
            )
            return built.indices.numpy()

        return run, lambda indices: {
            "recall_at_k": round(recall_at_k(embeddings, indices, recall_rows), 4)
        }

    if task == "kde":
        bank, _, _ = clustered_embeddings(num_points, 0.0, seed=1)
        queries, _, _ = clustered_embeddings(num_points, 0.0, seed=2)
        # Scott's rule on the bank, computed in NumPy so both impls get the same h.
        sigma = float(np.sqrt(np.var(bank.astype(np.float64), axis=0, ddof=1).mean()))
        bandwidth = sigma * num_points ** (-1.0 / (DIM + 4))
        if impl == "sklearn_kde":
            from sklearn.neighbors import KernelDensity

            def run():
                model = KernelDensity(bandwidth=bandwidth, leaf_size=num_points).fit(bank)
                return model.score_samples(queries)

            return run, lambda _: {}

        from i2a_tf import density

        def run():
            return density.kde_log_prob(queries, bank, bandwidth).numpy()

        return run, lambda _: {}

    raise ValueError(f"unknown task {task!r}")


def run_worker(task, impl, num_points, repeats, labeled_fraction, recall_rows):
    """Measures one (task, N, impl) in this process; returns its row."""
    if impl.startswith("i2a_tf"):
        import tensorflow as tf

        tf.constant(0.0).numpy()  # start the TF runtime before the baseline
    run, extra_fields = _make_runner(task, impl, num_points, labeled_fraction, recall_rows)
    baseline_mib = _current_rss_mib()
    result = run()  # warm-up: XLA compilation, thread pools, caches
    peak_with_compile_mib = _max_rss_mib()
    peak_was_reset = _reset_peak_rss()
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        durations.append(time.perf_counter() - started)
    row = {
        "task": task,
        "n": num_points,
        "impl": impl,
        "median_s": round(statistics.median(durations), 4),
        "peak_mib": round(_max_rss_mib() - baseline_mib, 1),
        "peak_with_compile_mib": round(
            max(peak_with_compile_mib, _max_rss_mib()) - baseline_mib, 1
        ),
        "runs_s": [round(d, 4) for d in durations],
    }
    if not peak_was_reset:
        row["peak_mib_note"] = "peak not resettable here: includes warm-up"
    row.update(extra_fields(result))
    return row


def _measure_in_subprocess(task, impl, num_points, args, repeats=None):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        task,
        impl,
        str(num_points),
        "--repeats",
        str(repeats or args.repeats),
        "--labeled_fraction",
        str(args.labeled_fraction),
        "--recall_rows",
        str(args.recall_rows),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    print(f"[bench_ops] {task} n={num_points} {impl} ...", file=sys.stderr, flush=True)
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=args.timeout_s, check=False
    )
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-4000:])
        raise RuntimeError(f"worker {task} {impl} n={num_points} failed ({completed.returncode})")
    row = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"[bench_ops]   {row}", file=sys.stderr, flush=True)
    return row


def _add_speedups(rows):
    sklearn_medians = {
        (row["task"], row["n"]): row["median_s"]
        for row in rows
        if row["impl"].startswith("sklearn")
    }
    for row in rows:
        reference = sklearn_medians.get((row["task"], row["n"]))
        if row["impl"].startswith("i2a_tf") and reference is not None and row["median_s"] > 0:
            row["speedup_vs_sklearn"] = round(reference / row["median_s"], 2)
    return rows


def _add_growth(rows):
    """Exponent b of time ∝ N^b from each impl's previous scale row."""
    previous = {}
    for row in rows:
        if row["task"] != "scale":
            continue
        if row["impl"] in previous:
            last = previous[row["impl"]]
            row["growth"] = round(
                math.log(row["median_s"] / last["median_s"]) / math.log(row["n"] / last["n"]), 2
            )
        previous[row["impl"]] = row
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="2000,20000,100000", help="comma-separated N for the pseudo-label task"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument(
        "--kde_size",
        type=int,
        default=5000,
        help="queries = bank rows of the KDE task (0 skips it)",
    )
    parser.add_argument(
        "--sklearn_max_n",
        type=int,
        default=20000,
        help="largest N at which sklearn LabelSpreading is run",
    )
    parser.add_argument(
        "--impls",
        default=",".join(PSEUDO_LABEL_IMPLS),
        help="comma-separated impls of the pseudo-label task",
    )
    parser.add_argument(
        "--scale",
        default="",
        help="comma-separated N of the approximate scaling task (e.g. 100000,300000,1000000)",
    )
    parser.add_argument(
        "--recall_rows", type=int, default=2000, help="rows sampled for recall_at_k"
    )
    parser.add_argument("--labeled_fraction", type=float, default=0.02)
    parser.add_argument("--timeout_s", type=float, default=1800.0, help="per measurement")
    parser.add_argument("--worker", nargs=3, metavar=("TASK", "IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        task, impl, num_points = args.worker
        row = run_worker(
            task, impl, int(num_points), args.repeats, args.labeled_fraction, args.recall_rows
        )
        print(json.dumps(row))
        return 0

    impls = [impl for impl in args.impls.split(",") if impl]
    unknown = sorted(set(impls) - set(PSEUDO_LABEL_IMPLS))
    if unknown:
        parser.error(f"unknown --impls {unknown}; expected some of {PSEUDO_LABEL_IMPLS}")
    rows = []
    for num_points in (int(size) for size in args.sizes.split(",") if size):
        for impl in impls:
            if impl.startswith("sklearn") and num_points > args.sklearn_max_n:
                continue
            rows.append(_measure_in_subprocess("pseudo_label", impl, num_points, args))
    if args.kde_size > 0:
        for impl in KDE_IMPLS:
            rows.append(_measure_in_subprocess("kde", impl, args.kde_size, args))
    for num_points in (int(size) for size in args.scale.split(",") if size):
        for impl in SCALE_IMPLS:
            rows.append(_measure_in_subprocess("scale", impl, num_points, args, repeats=1))
    print(json.dumps(_add_growth(_add_speedups(rows)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
