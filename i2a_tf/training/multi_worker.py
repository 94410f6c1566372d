"""`--strategy=multi_worker`: the cluster, each worker's folder, and the loop
that stands in for `fit`.

The cluster comes from the TF_CONFIG environment variable, as
`tf.distribute.MultiWorkerMirroredStrategy` reads it:

  {"cluster": {"worker": ["host0:port", "host1:port"]},
   "task": {"type": "worker", "index": 0}}

(optionally with a `"chief": ["host:port"]` job; without one, worker 0 is the
chief). Every worker runs the same `--mode=train` command on the same
`--workdir`; only the chief writes there. Each other worker writes into a
temporary folder of its own (`<workdir>/workertemp_<type>_<index>`, removed at
the end), the standard Keras multi-worker pattern: every worker runs the same
saves, so no collective op waits on a worker that skipped one.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
so `fit_with_loop` runs the epochs itself: `strategy.run(model.train_step, ...)`
per step, and the same callbacks `fit` would drive, in the same order. The
state the callbacks refresh (φ banks, pseudo-labels, the judge) is computed on
every worker from the same weights and the same inputs in the same order; the
loop checks each epoch that every worker holds the same state (a fingerprint
gathered from all workers) and that all resumed at the same epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import zlib

import keras
import numpy as np
import tensorflow as tf

from i2a_tf.config import ConfigError

log = logging.getLogger("i2a_tf.training")

TASK_TYPES = ("chief", "worker")


class WorkersDisagreeError(RuntimeError):
    """The workers hold different training state (or resumed different epochs)."""


@dataclasses.dataclass(frozen=True)
class WorkerTask:
    """This process's place in the cluster.

    Attributes:
      cluster: job name -> addresses ("host:port"), as in TF_CONFIG.
      task_type: "chief" or "worker".
      task_index: index into `cluster[task_type]`.
    """

    cluster: dict
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        return sum(len(self.cluster.get(job, ())) for job in TASK_TYPES)

    @property
    def is_chief(self) -> bool:
        """The chief job's task, or worker 0 of a cluster without a chief job."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_index == 0

    @property
    def name(self) -> str:
        return f"{self.task_type}_{self.task_index}"


def worker_task_from_env(environ=None) -> WorkerTask:
    """Parses TF_CONFIG (from `environ`, default `os.environ`).

    Raises ConfigError naming --strategy=multi_worker when TF_CONFIG is unset,
    not JSON, or does not describe a chief/worker task of its cluster.
    """
    environ = os.environ if environ is None else environ
    flag = "--strategy=multi_worker"
    text = environ.get("TF_CONFIG", "")
    if not text.strip():
        raise ConfigError(
            f"{flag}: the TF_CONFIG environment variable is not set; it names the "
            'cluster and this worker, e.g. {"cluster": {"worker": ["host0:2222", '
            '"host1:2222"]}, "task": {"type": "worker", "index": 0}} (on one '
            "machine, tools/launch_local_cluster.py sets it for each worker)")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{flag}: TF_CONFIG is not JSON ({error})") from error
    if not isinstance(spec, dict):
        raise ConfigError(f"{flag}: TF_CONFIG must be a JSON object, got {text!r}")
    cluster, task = spec.get("cluster"), spec.get("task")
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise ConfigError(f"{flag}: TF_CONFIG has no cluster with a 'worker' (or "
                          f"'chief') job: {text}")
    for job, addresses in cluster.items():
        if job not in TASK_TYPES and job != "ps":
            raise ConfigError(f"{flag}: TF_CONFIG's cluster has a '{job}' job; "
                              f"multi-worker training uses {' and '.join(TASK_TYPES)}")
        if job == "ps":
            raise ConfigError(f"{flag}: TF_CONFIG's cluster has parameter servers "
                              "('ps'); multi-worker mirrored training has none")
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and ":" in a for a in addresses)):
            raise ConfigError(f"{flag}: TF_CONFIG's '{job}' job must list "
                              f"'host:port' addresses, got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"{flag}: TF_CONFIG's cluster has more than one chief")
    if not isinstance(task, dict):
        raise ConfigError(f"{flag}: TF_CONFIG has no 'task' naming this worker: {text}")
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in cluster or task_type not in TASK_TYPES:
        raise ConfigError(f"{flag}: TF_CONFIG's task type {task_type!r} is not a "
                          f"job of its cluster ({', '.join(cluster)})")
    if (not isinstance(task_index, int) or isinstance(task_index, bool)
            or not 0 <= task_index < len(cluster[task_type])):
        raise ConfigError(f"{flag}: TF_CONFIG's task index {task_index!r} is not in "
                          f"[0, {len(cluster[task_type])}) for its '{task_type}' job")
    return WorkerTask(cluster=cluster, task_type=task_type, task_index=task_index)


def worker_output_dir(workdir: str, task: WorkerTask | None) -> str:
    """Where this process writes: `workdir` for the chief (and without a
    cluster), else `<workdir>/workertemp_<type>_<index>`."""
    if task is None or task.is_chief:
        return workdir
    return os.path.join(workdir, f"workertemp_{task.name}")


def start_worker_dir(output_dir: str, chief_backup: str, backup_name: str) -> None:
    """Empties a non-chief worker's folder and copies the chief's checkpoint
    into it (`<output_dir>/<backup_name>`), so this worker resumes the epoch
    the chief resumes. Call before the first collective op: until every worker
    has joined the first step, the chief cannot write a newer checkpoint."""
    shutil.rmtree(output_dir, ignore_errors=True)
    os.makedirs(output_dir)
    if os.path.isdir(chief_backup):
        shutil.copytree(chief_backup, os.path.join(output_dir, backup_name))


def state_fingerprint(variables) -> int:
    """CRC-32 of the variables' values, in order (dtype and shape included)."""
    crc = 0
    for variable in variables:
        value = np.ascontiguousarray(np.asarray(variable.numpy()))
        crc = zlib.crc32(f"{value.dtype}{value.shape}".encode(), crc)
        crc = zlib.crc32(value.tobytes(), crc)
    return crc


def agreement_check(strategy: tf.distribute.Strategy):
    """Returns `check(value, what)`, which raises WorkersDisagreeError unless
    every replica passed the same `value` (an int in [0, 2**32), e.g. a CRC-32
    or an epoch). Each call is also a barrier: it returns on a worker once
    every worker has called it."""
    @tf.function
    def gather(local):
        return strategy.run(lambda v: tf.distribute.get_replica_context().all_gather(
            v[tf.newaxis], axis=0), args=(local,))

    def check(value: int, what: str) -> None:
        # Two 16-bit halves: exact in float32, which every collective supports.
        local = tf.constant([value >> 16, value & 0xFFFF], tf.float32)
        gathered = np.asarray(strategy.experimental_local_results(gather(local))[0])
        values = sorted({int(high) << 16 | int(low)
                         for high, low in gathered.astype(np.int64)})
        if len(values) > 1:
            raise WorkersDisagreeError(
                f"the workers disagree on {what}: {', '.join(map(str, values))}")

    return check


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every worker has called it."""
    agreement_check(strategy)(0, "the barrier")


def fit_with_loop(model: keras.Model, strategy: tf.distribute.Strategy, dataset, *,
                  epochs: int, steps_per_epoch: int, callbacks: list,
                  state_variables, worker: str = "") -> keras.callbacks.History:
    """Trains as `model.fit(dataset, epochs=..., steps_per_epoch=...)` does, with
    a loop of `strategy.run(model.train_step, ...)`; returns the History.

    Like `fit`: trackers reset at each epoch start, the callbacks' hooks run in
    `fit`'s order, the epoch logs are the trackers' results, training starts
    at `model._initial_epoch` (where `BackupAndRestore` put it) and stops at
    `model.stop_training`. One iterator spans all epochs, as `fit`'s does with
    `steps_per_epoch`. The step's logs are the same on every replica (the
    losses use global denominators), so the first replica's are used.

    After each epoch's start callbacks (the refreshes) and at the end,
    `state_variables`' fingerprint is logged and checked equal on every
    worker; the resumed epoch is checked too. Raises WorkersDisagreeError
    otherwise.
    """
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, model=model, epochs=epochs, steps=steps_per_epoch)

    @tf.function
    def train_step(iterator):
        logs = strategy.run(model.train_step, args=(next(iterator),))
        return {name: strategy.experimental_local_results(value)[0]
                for name, value in logs.items()}

    check_workers_agree = agreement_check(strategy)
    model.stop_training = False
    callback_list.on_train_begin()
    initial_epoch = model._initial_epoch or 0  # set by BackupAndRestore's restore
    check_workers_agree(initial_epoch, "the epoch to resume at (every "
                        "worker must see the chief's checkpoint: a shared --workdir)")
    # One iterator, as `fit` under the default strategy. (Under a strategy,
    # `fit` first reads a batch from a throwaway iterator for its symbolic
    # build; the pipeline's shuffles reshuffle per iterator, so `fit` then
    # trains on the second iteration's order, and which order that is varies
    # from process to process.)
    iterator = iter(dataset)
    epoch_logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        fingerprint = state_fingerprint(state_variables)
        log.info("%sepoch %d: training state fingerprint %08x", worker and worker + ": ",
                 epoch + 1, fingerprint)
        check_workers_agree(fingerprint,
                            f"the training state at epoch {epoch + 1} (φ banks, "
                            "pseudo-labels, judge; computed on every worker)")
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = train_step(iterator)
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(model.get_metrics_result())
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    # Also a barrier: no worker leaves (and exits) while another still
    # trains; after it, each worker's saves and evaluation are local.
    fingerprint = state_fingerprint(state_variables)
    log.info("%send of training: state fingerprint %08x", worker and worker + ": ",
             fingerprint)
    check_workers_agree(fingerprint, "the state at the end of training")
    callback_list.on_train_end(logs=epoch_logs)
    return model.history
