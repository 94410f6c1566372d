"""Reference baseline: logistic regression on log-mel statistics, our front end.

The number every network must beat at the same label budget: the features and
the fit are `i2a_tf.study.logreg` (the study's `logreg` variant), computed once
per clip here and re-split for every fold, seed and budget. Splits come from the project's own
`split_speakers` / `choose_labeled`, i.e. exactly the test speakers and labeled
subsets that `prepare --test_fold=F --seed=S --label_fraction=P` writes.

`--trim_db=0` keeps every frame (no silence trimming), as a plain log-mel
statistics baseline would. `--speaker_normalisation=mean|mean_std` normalises
each clip's features by its speaker's band statistics (every clip of the
speaker among the 5 classes, labels otherwise unread; a test speaker's from its
own clips), as the study's `logreg` does under that flag; `--speaker_clips=all`
takes every clip of the speaker in the corpus instead (EmoDB: neutral and
boredom too), which the prepared data does not hold.

Protocol (defaults): EmoDB 5 classes, leave-2-speakers-out (5 folds of the
sorted speakers) x 3 seeds of the labeled subset, label budgets 5/10/20/100 %.

  python tools/baseline_logreg.py [--speech_dir ../shared/data/emodb/wav]

Prints one JSON object: per budget, mean and std of UAR over folds x seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.metrics import balanced_accuracy_score  # noqa: E402

from i2a_tf.config import SPEAKER_NORMALISATIONS, DataConfig, FrontEndConfig  # noqa: E402
from i2a_tf.data import corpora, frontend, splits  # noqa: E402
from i2a_tf.data.audio_files import AudioReadError, read_waveform  # noqa: E402
from i2a_tf.data.label_map import LabelMap  # noqa: E402
from i2a_tf.data.pipeline import sum_moments  # noqa: E402
from i2a_tf.study.logreg import (clip_statistics, fit_predict,  # noqa: E402
                                 speaker_normalised)

CLASSES = ("anger", "disgust", "fear", "happiness", "sadness")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speech_corpus", default="emodb")
    parser.add_argument("--speech_dir", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
        "emodb", "wav"))
    parser.add_argument("--fractions", default="0.05,0.1,0.2,1.0")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--test_fold", type=int, default=-1,
                        help="Score only this fold (default: every fold).")
    parser.add_argument("--trim_db", type=float, default=40.0)
    parser.add_argument("--speaker_normalisation", default="none",
                        choices=SPEAKER_NORMALISATIONS)
    parser.add_argument("--speaker_clips", default="classes", choices=("classes", "all"),
                        help="Which of a speaker's clips its statistics come from: "
                        "those of the 5 classes (what the prepared data holds), or "
                        "every clip of the corpus (EmoDB: neutral and boredom too).")
    args = parser.parse_args()
    if not os.path.isdir(args.speech_dir):
        print(f"error: --speech_dir={args.speech_dir}: no such directory", file=sys.stderr)
        return 2

    config = FrontEndConfig(trim_db=args.trim_db)
    label_map = LabelMap(CLASSES)
    scan = corpora.scan_speech(args.speech_corpus, args.speech_dir)
    features, labels, speakers, ids, moments = [], [], [], [], []
    centre = np.zeros(config.num_mels, np.float32)
    for item in scan.items:
        class_id = label_map.class_id(item.label)
        if class_id is None and (args.speaker_clips == "classes"
                                 or args.speaker_normalisation == "none"):
            continue
        try:
            waveform = read_waveform(item.path, config.sample_rate)
        except AudioReadError as error:
            print(f"skipped {error}", file=sys.stderr)
            continue
        samples = waveform.astype(np.float32) / 32768.0
        # Uncentred (one 2-s clip per row, float64 sums across clips).
        row = frontend.clip_band_moments(samples[None], [len(samples)], config, centre)
        moments.append((item.speaker, row.numpy()[0]))
        if class_id is None:
            continue  # statistics only
        features.append(clip_statistics(samples, config))
        labels.append(class_id)
        speakers.append(item.speaker)
        ids.append(item.utterance_id)
    by_speaker = {name: frontend.statistics_from_moment_sums(row, centre)
                  for name, row in sum_moments(moments).items()}
    features = np.stack([speaker_normalised(f, by_speaker[s], args.speaker_normalisation)
                         for f, s in zip(features, speakers)])
    labels = np.asarray(labels)
    speakers, ids = np.asarray(speakers), np.asarray(ids)

    results = {"corpus": args.speech_corpus, "clips": int(len(labels)),
               "classes": list(CLASSES), "trim_db": args.trim_db,
               "speaker_normalisation": args.speaker_normalisation,
               "speaker_clips": args.speaker_clips, "uar": {}}
    for fraction in (float(f) for f in args.fractions.split(",")):
        runs = []
        folds = range(args.folds) if args.test_fold < 0 else [args.test_fold]
        for fold in folds:
            for seed in (int(s) for s in args.seeds.split(",")):
                data = DataConfig(test_fold=fold, num_folds=args.folds, seed=seed,
                                  label_fraction=fraction)
                split = splits.split_speakers(list(speakers), data)
                train = np.flatnonzero(np.isin(speakers, split.train))
                test = np.flatnonzero(np.isin(speakers, split.test))
                labeled = train[splits.choose_labeled(labels[train], list(ids[train]),
                                                      fraction, seed)]
                predicted = fit_predict(features[labeled], labels[labeled],
                                        features[test])
                runs.append(balanced_accuracy_score(labels[test], predicted))
        results["uar"][f"{fraction:g}"] = {
            "mean": round(100 * float(np.mean(runs)), 1),
            "std": round(100 * float(np.std(runs)), 1), "runs": len(runs)}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
