"""The ablation table: each component of the method switched on in turn.

For every seed, prepares the corpus once (the seed picks the labeled subset),
then trains and evaluates each variant through the same `main` code path, and
prints mean ± std of the test UAR per variant, with the pseudo-label accuracy
of the last refresh. Runs one training at a time (the machine has 2 cores).

  python tools/ablation.py --flagfile=configs/emodb_ckplus.cfg --seeds=0,1,2 \
      --out=runs/ablation_emodb [--variants=supervised,full] [-- extra main flags]

Each run's metrics.json stays in <out>/seed<s>/<variant>/; the table also goes
to <out>/ablation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

VARIANTS = {
    "supervised": ["--nouse_translation", "--nouse_pseudo_labels"],
    "pl_label_spreading": ["--nouse_translation", "--use_pseudo_labels",
                           "--propagation=label_spreading"],
    "pl_widest_path": ["--nouse_translation", "--use_pseudo_labels",
                       "--propagation=widest_path"],
    "translation": ["--use_translation", "--nouse_density_weights", "--nouse_annealing",
                    "--nouse_pseudo_labels"],
    "translation_density": ["--use_translation", "--use_density_weights",
                            "--use_annealing", "--nouse_pseudo_labels"],
    "full": ["--use_translation", "--use_density_weights", "--use_annealing",
             "--use_pseudo_labels", "--propagation=widest_path"],
}
LABELS = {
    "supervised": "supervised only (A_L)",
    "pl_label_spreading": "+ pseudo-labels (label spreading)",
    "pl_widest_path": "+ pseudo-labels (widest path)",
    "translation": "+ translation (weight 1)",
    "translation_density": "+ translation with density weights",
    "full": "full method",
}


def _main(flagfile: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "i2a_tf.main", f"--flagfile={flagfile}", *extra]


def _run(command: list[str], log_path: str) -> None:
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}; "
                         f"see {log_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flagfile", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", required=True)
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for seed in seeds:
        seed_dir = os.path.join(args.out, f"seed{seed}")
        os.makedirs(seed_dir, exist_ok=True)
        _run(_main(args.flagfile, ["--mode=prepare", f"--workdir={seed_dir}",
                                   f"--seed={seed}", *extra]),
             os.path.join(seed_dir, "prepare.log"))
        for variant in variants:
            workdir = os.path.join(seed_dir, variant)
            os.makedirs(workdir, exist_ok=True)
            data_link = os.path.join(workdir, "data")
            if not os.path.exists(data_link):
                os.symlink(os.path.abspath(os.path.join(seed_dir, "data")), data_link)
            started = time.time()
            _run(_main(args.flagfile, ["--mode=train", f"--workdir={workdir}",
                                       f"--seed={seed}", *VARIANTS[variant], *extra]),
                 os.path.join(workdir, "train.log"))
            with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as f:
                metrics = json.load(f)
            metrics["seconds"] = time.time() - started
            results[variant].append(metrics)
            pseudo = metrics.get("last_pseudo_label_refresh", {})
            print(f"seed {seed} {variant:20s} UAR {100 * metrics['uar']:5.1f}  "
                  f"pseudo-label acc {100 * pseudo.get('pseudo_label_accuracy', float('nan')):5.1f}"
                  f"  ({metrics['seconds']:.0f} s)", flush=True)
    table = {}
    print(f"\n| variant | test UAR % (mean ± std, {len(seeds)} seeds) | "
          "pseudo-label accuracy % at last refresh | minutes per run |")
    print("|---|---|---|---|")
    for variant in variants:
        uars = np.array([100 * m["uar"] for m in results[variant]])
        pseudo = np.array([100 * m.get("last_pseudo_label_refresh", {}).get(
            "pseudo_label_accuracy", np.nan) for m in results[variant]])
        minutes = np.mean([m["seconds"] for m in results[variant]]) / 60
        table[variant] = {"uar": uars.tolist(), "pseudo_label_accuracy": pseudo.tolist(),
                          "minutes": minutes}
        pseudo_text = ("—" if np.all(np.isnan(pseudo))
                       else f"{np.nanmean(pseudo):.1f} ± {np.nanstd(pseudo):.1f}")
        print(f"| {LABELS[variant]} | {uars.mean():.1f} ± {uars.std():.1f} | "
              f"{pseudo_text} | {minutes:.1f} |")
    with open(os.path.join(args.out, "ablation.json"), "w", encoding="utf-8") as f:
        json.dump({"seeds": seeds, "extra_flags": extra, "flagfile": args.flagfile,
                   "results": table}, f, indent=1)


if __name__ == "__main__":
    main()
