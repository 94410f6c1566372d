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
import textwrap

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


# --help: what most users need first, then every flag by config section.
COMMON_FLAGS = ("mode", "flagfile", "workdir", "speech_corpus", "speech_dir",
                "face_corpus", "face_dir", "classes", "label_fraction", "test_speakers",
                "test_fold", "num_folds", "seed", "model")
SECTION_TITLES = {"data": "Corpora, classes and splits", "frontend": "Log-mel front end",
                  "input": "Input pipeline", "model": "Networks",
                  "loss": "Objective and components", "graph": "Pseudo-labels (graph)",
                  "train": "Training", "export": "Export and predict", "study": "Study"}
EXIT_CODES = ("Exit codes: 0 done; 1 a failure while running (prepare, training or a "
              "study cell failed, or predict could not read a file); 2 a usage error "
              "(an unknown flag, a value that does not parse or is out of range, a "
              "missing flagfile).")
HELP_ARGS = ("--help", "-help", "--helpshort", "-helpshort", "-h", "-?")
HELPFULL_ARGS = ("--helpfull", "-helpfull")


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88, initial_indent="      ",
                         subsequent_indent="      ")


def _flag_help(name: str) -> str:
    if name == "flagfile":
        return ("  --flagfile=FILE\n" + _wrap("Read flags from FILE, one per line; "
                                            "flags after it on the command line win. "
                                            "configs/*.cfg are flagfiles."))
    flag = FLAGS[name]
    default = flag.default
    if isinstance(default, bool):
        head = f"  --[no]{name} (default: {'on' if default else 'off'})"
    else:
        if isinstance(default, (list, tuple)):
            default = ",".join(str(v) for v in default)
        head = f"  --{name}={default if default not in ('', None) else chr(39) * 2}"
    return f"{head}\n{_wrap(flag.help or '')}"


def usage_text(full: bool = False) -> str:
    """--help: usage, modes, the common flags, then every flag by section
    (`full`: and absl's own flags)."""
    modes = __doc__[__doc__.index("Modes"):].rstrip()
    parts = ["i2a_tf: speech emotion recognition from few labeled clips, unlabeled "
             "clips and labeled face images (Image2Audio).", "",
             "usage: python -m i2a_tf.main --flagfile=configs/<x>.cfg [--flag=value ...] "
             "[files, for --mode=predict]", "", modes, "", "Common flags:",
             *(_flag_help(name) for name in COMMON_FLAGS)]
    sections: dict[str | None, list[str]] = {}
    for section, field in config_lib.leaf_fields():
        if field.name not in COMMON_FLAGS:
            sections.setdefault(section, []).append(field.name)
    for section, names in sections.items():
        parts += ["", f"{SECTION_TITLES.get(section, 'General')}:",
                  *(_flag_help(name) for name in names)]
    if full:
        main_module = sys.modules[__name__]
        for module, module_flags in sorted(FLAGS.flags_by_module_dict().items()):
            if module in (__name__, "__main__", getattr(main_module, "__file__", "")):
                continue
            parts += ["", f"{module}:"] + [
                _flag_help(f.name) for f in sorted(module_flags, key=lambda f: f.name)
                if f.name != "flagfile"]
    else:
        parts += ["", "--helpfull adds absl's own flags (logging verbosity, ...)."]
    return "\n".join(parts + ["", textwrap.fill(EXIT_CODES, width=88)])


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with our help (exit 0) and usage errors (exit 2);
    then the quiet console unless --verbosity >= 1 (i2a_tf/console.py)."""
    arguments = argv[1:]
    if any(a in HELP_ARGS for a in arguments):
        print(usage_text())
        sys.exit(0)
    if any(a in HELPFULL_ARGS for a in arguments):
        print(usage_text(full=True))
        sys.exit(0)
    try:
        arguments = FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}\n(python -m i2a_tf.main --help lists the flags)",
              file=sys.stderr)
        sys.exit(2)
    if FLAGS["verbosity"].value < 1:
        # Before TensorFlow is imported: its native start-up lines go to fd 2.
        from i2a_tf.console import route_stderr_through_filter
        route_stderr_through_filter()
    return arguments


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


MULTI_WORKER_MODES = ("train", "evaluate")


def check_modes_for_strategy(modes: list[str], config: config_lib.Config) -> None:
    """Under --strategy=multi_worker every worker runs the same command, so
    only training (and the evaluation the chief runs after it) may be asked
    for: N workers preparing one workdir at once would overwrite each other."""
    if config.train.strategy == "multi_worker" and any(
            m not in MULTI_WORKER_MODES for m in modes):
        raise config_lib.ConfigError(
            f"--mode={','.join(modes)}: --strategy=multi_worker runs on every worker "
            f"and takes --mode={','.join(MULTI_WORKER_MODES)} only; prepare the data "
            "first with one --mode=prepare process")


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


class _ConsoleFormatter(logging.Formatter):
    """`15:37:42 message`; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return f"{self.formatTime(record, '%H:%M:%S')} {text}"


def configure_logging() -> None:
    """The project's log lines at INFO; short (time and message) unless
    --verbosity >= 1, which keeps absl's full prefix (file, line, thread)."""
    logger = logging.getLogger("i2a_tf")
    logger.setLevel(logging.INFO)
    if not FLAGS["verbosity"].present:
        # Other libraries' INFO lines (TensorFlow's converter, ...) only on request.
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.WARNING)
    if FLAGS["verbosity"].value < 1 and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_ConsoleFormatter())
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: list[str]) -> int:
    configure_logging()
    try:
        config = config_from_flags()
        modes = modes_from_flag(FLAGS.mode)
        check_modes_for_strategy(modes, config)
    except config_lib.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = argv[1:]
    if files and "predict" not in modes:
        print(f"error: unexpected arguments: {' '.join(files)} (only "
              "--mode=predict takes files)", file=sys.stderr)
        return 2
    if modes != ["predict"]:
        os.makedirs(config.workdir, exist_ok=True)
    if "prepare" in modes or "train" in modes:
        # The record of what produced the data and the model; evaluate reads it.
        config_lib.write_config(config, os.path.join(config.workdir, "config.json"))
    from i2a_tf.data.prepare import PrepareError
    from i2a_tf.study.runner import StudyError, StudyInterrupted
    from i2a_tf.training.trainer import TrainingError
    try:
        failed = run(modes, config, files)
    except StudyInterrupted:
        print("error: the study was stopped (SIGTERM); its finished cells are kept, "
              "run the same command again to continue", file=sys.stderr)
        return 128 + 15
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
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    entry()
