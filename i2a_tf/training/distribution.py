"""Devices, the distribution strategy and numeric policy of a run."""

from __future__ import annotations

import keras
import tensorflow as tf

from i2a_tf.config import ConfigError, InputConfig, TrainConfig
from i2a_tf.training.multi_worker import worker_task_from_env


def configure_determinism(inputs: InputConfig) -> None:
    """Turns on TensorFlow's op determinism when `--deterministic` (the
    default): with seeded inputs, a run's result is then a function of its
    flags. It is process-wide and cannot be turned off again, so only the
    entry point calls it, once, before any op runs."""
    if inputs.deterministic:
        tf.config.experimental.enable_op_determinism()


def configure_devices(train: TrainConfig) -> None:
    """Splits the CPU into `num_cpu_devices` logical devices; call before
    TensorFlow starts using devices.

    Raises ConfigError when the devices are already initialised with another
    count.
    """
    if train.num_cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        wanted = [tf.config.LogicalDeviceConfiguration()] * train.num_cpu_devices
        try:
            tf.config.set_logical_device_configuration(cpu, wanted)
        except RuntimeError as error:
            if len(tf.config.list_logical_devices("CPU")) != train.num_cpu_devices:
                raise ConfigError(
                    f"--num_cpu_devices={train.num_cpu_devices}: TensorFlow has "
                    f"already initialised its devices ({error})") from error


def set_precision_policy(train: TrainConfig) -> None:
    """mixed_float16 when `--mixed_precision` (GPU only), else float32.

    Raises ConfigError when mixed precision is asked for without a GPU.
    """
    if train.mixed_precision:
        if not tf.config.list_physical_devices("GPU"):
            raise ConfigError("--mixed_precision=true: needs a GPU and none is visible; "
                              "mixed_float16 is slower than float32 on CPU")
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")


def make_strategy(train: TrainConfig) -> tf.distribute.Strategy:
    """The default strategy, or MirroredStrategy over every GPU, or else over
    the logical CPU devices, or MultiWorkerMirroredStrategy over the cluster
    of TF_CONFIG (ConfigError when TF_CONFIG is missing or invalid)."""
    if train.strategy == "default":
        return tf.distribute.get_strategy()
    if train.strategy == "multi_worker":
        # Parsed first for a clear error: TensorFlow's own parser either
        # raises a bare JSON error or silently trains one local worker.
        worker_task_from_env()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    if len(devices) < 2:
        raise ConfigError(
            "--strategy=mirrored: only one device is visible; set "
            "--num_cpu_devices=2 (or more) to mirror over logical CPU devices")
    return tf.distribute.MirroredStrategy(devices)


def distribute_train_input(strategy: tf.distribute.Strategy, train: TrainConfig,
                           input_fn) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The training stream of `input_fn(input_context)` for `strategy`.

    One replica: the plain dataset. Otherwise `distribute_datasets_from_function`:
    one pipeline per worker process (under multi_worker, each reads its own
    shard of the records), and under mirrored one pipeline whose per-replica
    batches go to the replicas in turn, or with `--replica_input_pipelines`
    one pipeline per replica, sharded as the workers of a multi-worker run.
    """
    if strategy.num_replicas_in_sync == 1:
        return input_fn(None)
    options = None
    if train.replica_input_pipelines:
        options = tf.distribute.InputOptions(
            experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA)
    return strategy.distribute_datasets_from_function(input_fn, options)
