"""Entry point: `python -m i2a_tf.main --flagfile=configs/demo.cfg [--mode=...]`.

Defines the flags (one per config field, see i2a_tf/config.py), turns them into a
frozen `Config`, writes it to `<workdir>/config.json` and calls the library.
Nothing below this module reads flags.

Modes (`--mode` takes one or several, comma-separated, run in this order):
  prepare   corpora -> sharded TFRecords, dataset.json, skipped.json in <workdir>/data
  train     the Image2Audio model -> <workdir>/classifier.keras, logs/, metrics.json
            (a killed run resumes from <workdir>/backup when re-run)
  evaluate  <workdir>/classifier.keras on the test speakers -> <workdir>/metrics.json
  export    <workdir>/classifier.keras -> SavedModel (TF Serving layout) and TFLite
            models under <export_dir>, checked on the test split (export_report.json)
  predict   audio files given after the flags -> one JSON line each on stdout
            (--model: a SavedModel, a TF Serving base folder or a .tflite file)
  study     a grid of folds x seeds x label budgets x variants (--study_* flags),
            each cell prepared, trained and scored in its own process ->
            results.csv, results.md (paired differences to supervised-only),
            plots, listenable translations and report.html in <study_dir>
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

from i2a_tf import config as config_lib

MODES = ("prepare", "train", "evaluate", "export", "predict", "study")
FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines --mode and one flag per leaf field of the config tree."""
    flags.DEFINE_list("mode", ["prepare"],
                      f"What to run: one or more of {', '.join(MODES)}, "
                      "comma-separated; they run in that order.",
                      flag_values=flag_values)
    for _, field in config_lib.leaf_fields():
        default = config_lib.field_default(field)
        help_text = field.metadata["help"]
        if isinstance(default, bool):
            define = flags.DEFINE_bool
        elif isinstance(default, int):
            define = flags.DEFINE_integer
        elif isinstance(default, float):
            define = flags.DEFINE_float
        elif isinstance(default, tuple):
            define, default = flags.DEFINE_list, list(default)
        else:
            define = flags.DEFINE_string
        define(field.name, default, help_text, flag_values=flag_values)


def config_from_flags() -> config_lib.Config:
    return config_lib.config_from_flat(
        {field.name: FLAGS[field.name].value for _, field in config_lib.leaf_fields()})


def modes_from_flag(values: list[str]) -> list[str]:
    """The --mode values, checked and put in pipeline order."""
    unknown = [v for v in values if v not in MODES]
    if unknown or not values:
        raise config_lib.ConfigError(
            f"--mode={','.join(values)}: choose one or more of {', '.join(MODES)}")
    if "study" in values and len(values) > 1:
        raise config_lib.ConfigError(
            f"--mode={','.join(values)}: study runs alone (it prepares, trains and "
            "evaluates every cell itself)")
    return [m for m in MODES if m in values]


def run(modes: list[str], config: config_lib.Config, files: list[str] = ()) -> int:
    """Runs the modes in order; returns the number of files predict failed on."""
    from i2a_tf.training.distribution import configure_determinism, configure_devices
    # Before any TensorFlow op runs: logical CPU devices can only be set then.
    configure_devices(config.train)
    configure_determinism(config.input)
    for mode in modes:
        if mode == "prepare":
            from i2a_tf.data.prepare import prepare
            prepare(config)
        elif mode == "train":
            from i2a_tf.training.trainer import train
            train(config)
        elif mode == "evaluate" and "train" not in modes:
            # train ends by evaluating the classifier it saved.
            from i2a_tf.training.trainer import evaluate
            evaluate(config)
        elif mode == "export":
            from i2a_tf.export.exporter import export
            export(config)
        elif mode == "predict":
            from i2a_tf.export.predict import predict
            return predict(config, list(files))
        elif mode == "study":
            from i2a_tf.study.runner import run_study
            run_study(config)
    return 0


def main(argv: list[str]) -> int:
    logging.getLogger("i2a_tf").setLevel(logging.INFO)
    try:
        config = config_from_flags()
        modes = modes_from_flag(FLAGS.mode)
    except config_lib.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = argv[1:]
    if files and "predict" not in modes:
        raise app.UsageError(f"unexpected arguments: {' '.join(files)} (only "
                             "--mode=predict takes files)")
    if modes != ["predict"]:
        os.makedirs(config.workdir, exist_ok=True)
    if "prepare" in modes or "train" in modes:
        # The record of what produced the data and the model; evaluate reads it.
        config_lib.write_config(config, os.path.join(config.workdir, "config.json"))
    from i2a_tf.data.prepare import PrepareError
    from i2a_tf.study.runner import StudyError
    from i2a_tf.training.trainer import TrainingError
    try:
        failed = run(modes, config, files)
    except (config_lib.ConfigError, PrepareError, TrainingError, StudyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, config_lib.ConfigError) else 1
    if failed:
        print(f"error: {failed} of {len(files)} files failed (see their error lines)",
              file=sys.stderr)
        return 1
    return 0


def entry() -> None:
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
