"""Entry point: `python -m i2a_tf.main --flagfile=configs/demo.cfg [--mode=...]`.

Defines the flags (one per config field, see i2a_tf/config.py), turns them into a
frozen `Config`, writes it to `<workdir>/config.json` and calls the library.
Nothing below this module reads flags.

Modes:
  prepare  corpora -> sharded TFRecords, dataset.json, skipped.json in <workdir>/data
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

from i2a_tf import config as config_lib

MODES = ("prepare",)
FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines --mode and one flag per leaf field of the config tree."""
    flags.DEFINE_enum("mode", "prepare", MODES, "What to run.")
    for _, field in config_lib.leaf_fields():
        default = config_lib.field_default(field)
        help_text = field.metadata["help"]
        if isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, help_text)
        elif isinstance(default, tuple):
            flags.DEFINE_list(field.name, list(default), help_text)
        else:
            flags.DEFINE_string(field.name, default, help_text)


def config_from_flags() -> config_lib.Config:
    return config_lib.config_from_flat(
        {field.name: FLAGS[field.name].value for _, field in config_lib.leaf_fields()})


def run(mode: str, config: config_lib.Config) -> None:
    if mode == "prepare":
        from i2a_tf.data.prepare import prepare
        prepare(config)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger("i2a_tf").setLevel(logging.INFO)
    try:
        config = config_from_flags()
    except config_lib.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.makedirs(config.workdir, exist_ok=True)
    config_lib.write_config(config, os.path.join(config.workdir, "config.json"))
    from i2a_tf.data.prepare import PrepareError
    try:
        run(FLAGS.mode, config)
    except (config_lib.ConfigError, PrepareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, config_lib.ConfigError) else 1
    return 0


def entry() -> None:
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
