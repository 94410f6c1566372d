"""The typed config tree: defaults, validation messages, round trip."""

import dataclasses
import glob
import json
import os

import pytest

from conftest import REPO_ROOT

from i2a_tf import config as config_lib


def test_defaults_validate_and_every_field_is_a_documented_flag():
    config = config_lib.Config().validate()
    names = [f.name for _, f in config_lib.leaf_fields()]
    assert len(names) == len(set(names))
    assert all(f.metadata.get("help") for _, f in config_lib.leaf_fields())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data.seed = 3


def test_round_trip_through_json(tmp_path):
    config = config_lib.config_from_flat({"workdir": str(tmp_path), "seed": 7,
                                          "classes": ["anger", "fear"],
                                          "label_map": ["scared:fear"]})
    assert config.data.classes == ("anger", "fear")
    path = tmp_path / "config.json"
    config_lib.write_config(config, str(path))
    assert config_lib.config_from_dict(json.loads(path.read_text())) == config


@pytest.mark.parametrize("values, message", [
    ({"label_fraction": 0.0}, "--label_fraction=0.0: must be in (0, 1]"),
    ({"label_fraction": 1.01}, "--label_fraction=1.01: must be in (0, 1]"),
    ({"speech_corpus": "timit"}, "--speech_corpus=timit: unknown corpus"),
    ({"speech_corpus": "emodb", "speech_dir": "/no/such/dir"},
     "--speech_dir=/no/such/dir: no such directory"),
    ({"face_corpus": "jaffe", "face_dir": "/no/such"}, "--face_dir=/no/such: no such file"),
    ({"classes": ["anger"]}, "--classes=anger: needs at least two classes"),
    ({"classes": ["a", "a"]}, "--classes=a,a: classes must be distinct"),
    ({"label_map": ["calm"]}, "--label_map=calm: entry 'calm' is not of the form from:to"),
    ({"test_fold": 5}, "--test_fold=5: must be < num_folds=5"),
    ({"test_speakers": ["a"], "val_speakers": ["a"]},
     "--val_speakers=a: speakers ['a'] are also test speakers"),
    ({"pad_mode": "zeros"}, "--pad_mode=zeros: must be one of repeat, mean"),
    ({"fmax_hz": 9000.0}, "--fmax_hz=9000.0: must not exceed the Nyquist frequency"),
    ({"labeled_batch_size": 0}, "--labeled_batch_size=0: must be >= 1"),
    ({"workdir": ""}, "--workdir=: must not be empty"),
    ({"unlabeled_train_clips": False},
     "--unlabeled_train_clips=False: with --unlabeled_test_clips=False the unlabeled "
     "pool would be empty"),
    ({"no_such_flag": 1}, "--no_such_flag: not a configuration flag"),
    ({"tflite_variants": ["float32", "int4"]},
     "--tflite_variants=float32,int4: must be distinct values from float32, "
     "dynamic_range, int8"),
    ({"tflite_variants": ["int8", "int8"]}, "--tflite_variants=int8,int8: must be distinct"),
    ({"int8_frontend": "half"}, "--int8_frontend=half: must be one of float, int8"),
    ({"int8_weights": "half"},
     "--int8_weights=half: must be one of auto, per_channel, per_tensor"),
    ({"model_name": "a/b"}, "--model_name=a/b: must be a non-empty folder name"),
    ({"model_name": ".hidden"}, "--model_name=.hidden: must be a non-empty folder name"),
    ({"export_version": -1}, "--export_version=-1: must be a positive version"),
    ({"representative_clips": 0}, "--representative_clips=0: must be >= 1"),
    ({"mixup_alpha": -0.1}, "--mixup_alpha=-0.1: must be >= 0"),
    ({"label_smoothing": 1.0}, "--label_smoothing=1.0: must be in [0, 1)"),
    ({"lr_schedule": "step"}, "--lr_schedule=step: must be one of constant, cosine"),
    ({"train_seed": -2}, "--train_seed=-2: must be >= 0, or -1 for --seed"),
    # Smoothing 0.1 over 5 classes holds C near 0.92: a 0.95 threshold would
    # admit no consistency target.
    ({"use_consistency": True, "label_smoothing": 0.1, "consistency_threshold": 0.95},
     "--consistency_threshold=0.95: must be below 0.920 = 1 - label_smoothing"),
    ({"lambda_density": -1.0}, "--lambda_density=-1.0: must be >= 0"),
    ({"lambda_density": 1.0, "use_density_weights": False},
     "--lambda_density=1.0: needs use_translation and use_density_weights"),
    ({"knn_method": "lsh"}, "--knn_method=lsh: must be one of exact, approximate"),
    ({"knn_method": "approximate", "knn_list_size": 10},
     "--knn_list_size=10: must be > knn_k=10"),
    ({"knn_list_size": 1}, "--knn_list_size=1: must be >= 2"),
    ({"warmup_labeled_accuracy": 1.5}, "--warmup_labeled_accuracy=1.5: must be in [0, 1]"),
    ({"warmup_labeled_accuracy": 0.9, "warmup_epochs": 0},
     "--warmup_labeled_accuracy=0.9: needs --warmup_epochs >= 1"),
    ({"warmup_max_epochs": 6}, "--warmup_max_epochs=6: only used with --warmup_labeled_accuracy"),
    ({"warmup_max_epochs": 2, "warmup_epochs": 4, "epochs": 10, "warmup_labeled_accuracy": 0.9},
     "--warmup_max_epochs=2: must be 0 or in [warmup_epochs=4, epochs=10)"),
    ({"warmup_max_epochs": 10, "warmup_epochs": 4, "epochs": 10, "warmup_labeled_accuracy": 0.9},
     "--warmup_max_epochs=10: must be 0 or in [warmup_epochs=4, epochs=10)"),
    ({"knn_probes": 0}, "--knn_probes=0: must be >= 1"),
    ({"prepare_runner": "spark"}, "--prepare_runner=spark: must be one of local, beam"),
    ({"beam_pipeline_args": "--runner=DirectRunner"},
     "--beam_pipeline_args=--runner=DirectRunner: only used with --prepare_runner=beam"),
    ({"prepare_runner": "beam", "beam_pipeline_args": "--job_name='x"},
     "--beam_pipeline_args=--job_name='x: does not parse as a command line"),
])
def test_bad_values_name_the_flag(values, message):
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.config_from_flat(values)
    assert message in str(error.value)


def test_frontend_derived_sizes():
    frontend = config_lib.FrontEndConfig()
    assert (frontend.frame_length, frontend.frame_step, frontend.fft_length) == (400, 160, 512)


def test_consistency_threshold_below_the_smoothing_cap_is_accepted():
    # 1 - 0.1 + 0.1 / 5 = 0.92: 0.85 admits targets; smoothing off, any threshold.
    config_lib.config_from_flat(
        {"use_consistency": True, "label_smoothing": 0.1, "consistency_threshold": 0.85})
    config_lib.config_from_flat(
        {"use_consistency": True, "label_smoothing": 0.0, "consistency_threshold": 0.99})
    # Without consistency the threshold is unused: no constraint.
    config_lib.config_from_flat({"label_smoothing": 0.1, "consistency_threshold": 0.95})


def test_training_seed_defaults_to_the_data_seed():
    assert config_lib.config_from_flat({"seed": 3}).training_seed == 3
    assert config_lib.config_from_flat({"seed": 3, "train_seed": 0}).training_seed == 0


SHIPPED_CONFIGS = sorted(os.path.basename(p) for p in glob.glob(
    os.path.join(REPO_ROOT, "configs", "*.cfg")))


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_shipped_config_parses_and_validates(name, monkeypatch):
    """Each configs/*.cfg (its nested --flagfile paths relative to the
    repository, as the README runs them) parses through main's flags into a
    valid Config, and so does every study variant's flag set on top of it:
    a typo in a config or a variant, or a combination validation refuses
    (e.g. a consistency threshold above the smoothing cap), fails here rather
    than hours into a study."""
    from absl import flags as absl_flags
    from i2a_tf import main as main_lib
    from i2a_tf.study import grid as grid_lib
    monkeypatch.chdir(REPO_ROOT)

    def parsed(*extra):
        values = absl_flags.FlagValues()
        main_lib.define_flags(values)
        values(["main", f"--flagfile=configs/{name}", *extra])
        config = config_lib.config_from_flat(
            {f.name: values[f.name].value for _, f in config_lib.leaf_fields()})
        return config, main_lib.modes_from_flag(values["mode"].value)

    config, modes = parsed()
    if modes != ["study"]:
        return
    grid = grid_lib.study_grid(config)
    assert grid.cells(), name
    for variant in grid.variants:
        flags = grid.variant_flags[variant]
        if flags is not None:  # logreg: no training flags
            parsed(*flags)
