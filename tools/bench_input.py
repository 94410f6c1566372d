"""Input-pipeline throughput: raw-waveform records vs precomputed log-mel records.

Generates a synthetic corpus of fixed-length clips (default 2,000 x 3 s), runs
`prepare` with --precompute_logmel and label_fraction=1 (so every training clip is
in train_labeled), then times the training stream of each record kind (shuffle,
random crop, SpecAugment, batch 64) over several passes after a warm-up, and
prints one JSON object with examples/s per pipeline: with the default in-memory
cache of parsed examples (the first timed pass fills it) and without it.

  python tools/bench_input.py [--clips 2000] [--seconds 3] [--workdir /tmp/i2a_bench_input]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from i2a_tf import config as config_lib  # noqa: E402
from i2a_tf.data import pipeline, synthetic  # noqa: E402
from i2a_tf.data.prepare import prepare  # noqa: E402

CLASSES = ("anger", "disgust", "fear", "happiness", "sadness")


def _time_stream(dataset: tf.data.Dataset, batches: int, batch_size: int) -> float:
    iterator = iter(dataset)
    for _ in range(5):  # warm-up: tracing, cache fill starts, autotuning
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--passes", type=float, default=3.0,
                        help="how many times the timed batches cover the corpus")
    parser.add_argument("--workdir", default="/tmp/i2a_bench_input")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args()

    speakers = 10  # one of them is the test speaker: the timed split is the other 9
    per_class = max(1, -(-args.clips // ((speakers - 1) * len(CLASSES))))
    speech_dir = os.path.join(args.workdir, "corpus", "speech")
    face_dir = os.path.join(args.workdir, "corpus", "faces")
    started = time.perf_counter()
    synthetic.generate_speech_corpus(
        speech_dir, classes=CLASSES, num_speakers=speakers,
        clips_per_speaker_per_class=per_class, duration_s=args.seconds, seed=0)
    synthetic.generate_face_corpus(face_dir, classes=CLASSES, num_subjects=4,
                                   images_per_subject_per_class=2, seed=0)
    generate_s = time.perf_counter() - started

    config = config_lib.config_from_flat({
        "workdir": args.workdir, "speech_corpus": "folder", "speech_dir": speech_dir,
        "face_corpus": "folder", "face_dir": face_dir, "classes": CLASSES,
        "label_fraction": 1.0, "test_speakers": ("spk01",), "precompute_logmel": True,
        "num_frames": int(args.seconds * 100) - 2,
        "records_per_shard": 256,
    })
    started = time.perf_counter()
    info = prepare(config)
    prepare_s = time.perf_counter() - started
    num_clips = info["splits"]["train_labeled"]["num_examples"]
    batches = max(10, int(args.passes * num_clips / args.batch_size))

    results = {"clips": num_clips, "seconds_per_clip": args.seconds,
               "batch_size": args.batch_size, "cpu_count": os.cpu_count(),
               "generate_s": round(generate_s, 1), "prepare_s": round(prepare_s, 1)}
    data = pipeline.DatasetInfo(config)
    for name, precomputed in (("raw_waveform", False), ("precomputed_logmel", True)):
        for cache in (True, False):
            run_config = dataclasses.replace(config, input=dataclasses.replace(
                config.input, use_precomputed_logmel=precomputed, cache=cache))
            dataset = pipeline.audio_dataset(data, "train_labeled", run_config,
                                             training=True, batch_size=args.batch_size)
            suffix = "" if cache else "_uncached"
            results[f"{name}{suffix}_examples_per_s"] = round(
                _time_stream(dataset, batches, args.batch_size), 1)
    print(json.dumps(results))
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
