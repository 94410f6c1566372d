"""--strategy=multi_worker: TF_CONFIG, the custom loop, the local launcher, and
two real workers against one process over two replicas."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, TINY_TRAIN, run_main
from training_fixtures import set_tiny_state, tiny_batch, tiny_config, tiny_model

from i2a_tf.config import ConfigError
from i2a_tf.training import multi_worker

LAUNCHER = os.path.join(REPO_ROOT, "tools", "launch_local_cluster.py")


def _tf_config(cluster, task_type="worker", index=0):
    return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                     "task": {"type": task_type, "index": index}})}


# -- Config and TF_CONFIG --------------------------------------------------------------

@pytest.mark.parametrize("overrides, flag", [
    (dict(strategy="multi_worker", jit_compile=True), "--jit_compile=True"),
    (dict(strategy="multi_worker", training_loop="fit"), "--training_loop=fit"),
    (dict(strategy="multi_worker", num_cpu_devices=2), "--num_cpu_devices=2"),
    (dict(strategy="default", replica_input_pipelines=True),
     "--replica_input_pipelines=True"),
    (dict(training_loop="custom", jit_compile=True), "--jit_compile=True"),
    (dict(training_loop="scan"), "--training_loop=scan"),
    (dict(strategy="multi_host"), "--strategy=multi_host"),
])
def test_config_rejects_what_multi_worker_cannot_run(overrides, flag):
    with pytest.raises(ConfigError, match=re.escape(flag)):
        tiny_config(**overrides)


def test_config_picks_the_loop():
    assert tiny_config(strategy="multi_worker").train.uses_custom_loop
    assert not tiny_config(strategy="mirrored", num_cpu_devices=2).train.uses_custom_loop
    assert tiny_config(strategy="mirrored", num_cpu_devices=2,
                       training_loop="custom").train.uses_custom_loop


@pytest.mark.parametrize("environ, message", [
    ({}, "TF_CONFIG environment variable is not set"),
    ({"TF_CONFIG": "{cluster"}, "TF_CONFIG is not JSON"),
    ({"TF_CONFIG": "[1]"}, "must be a JSON object"),
    (_tf_config({}), "no cluster with a 'worker'"),
    (_tf_config({"worker": ["a:1"], "ps": ["b:2"]}), "parameter servers"),
    (_tf_config({"worker": ["localhost"]}), "'host:port' addresses"),
    (_tf_config({"worker": ["a:1", "b:2"]}, index=2), "task index 2"),
    (_tf_config({"worker": ["a:1"]}, task_type="evaluator"), "task type 'evaluator'"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}})}, "no 'task'"),
])
def test_bad_tf_config_names_the_strategy(environ, message):
    with pytest.raises(ConfigError, match="--strategy=multi_worker") as error:
        multi_worker.worker_task_from_env(environ)
    assert message in str(error.value)


def test_chief_and_worker_folders(tmp_path):
    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    first = multi_worker.worker_task_from_env(_tf_config(workers, index=0))
    second = multi_worker.worker_task_from_env(_tf_config(workers, index=1))
    assert first.is_chief and not second.is_chief and first.num_workers == 2
    with_chief = {"chief": ["127.0.0.1:3"], **workers}
    chief = multi_worker.worker_task_from_env(_tf_config(with_chief, "chief"))
    worker0 = multi_worker.worker_task_from_env(_tf_config(with_chief, index=0))
    assert chief.is_chief and not worker0.is_chief and chief.num_workers == 3
    workdir = str(tmp_path)
    assert multi_worker.worker_output_dir(workdir, first) == workdir
    assert multi_worker.worker_output_dir(workdir, None) == workdir
    temp = multi_worker.worker_output_dir(workdir, second)
    assert temp == os.path.join(workdir, "workertemp_worker_1")
    # A worker starts from an empty folder holding a copy of the chief's backup.
    os.makedirs(os.path.join(workdir, "backup"))
    with open(os.path.join(workdir, "backup", "training_metadata.json"), "w") as f:
        f.write('{"epoch": 2}')
    os.makedirs(temp)
    with open(os.path.join(temp, "stale.json"), "w") as f:
        f.write("{}")
    multi_worker.start_worker_dir(temp, os.path.join(workdir, "backup"), "backup")
    assert os.listdir(temp) == ["backup"]
    assert os.listdir(os.path.join(temp, "backup")) == ["training_metadata.json"]


def test_main_refuses_prepare_under_multi_worker(tmp_path):
    result = run_main("--flagfile=configs/demo.cfg", "--mode=prepare,train",
                      f"--workdir={tmp_path}", "--strategy=multi_worker")
    assert result.returncode == 2
    assert "--strategy=multi_worker" in result.stderr and "--mode=prepare" in result.stderr


# -- The loop ---------------------------------------------------------------------------

def test_state_fingerprint_sees_every_value():
    import tensorflow as tf
    a, b = tf.Variable([1.0, 2.0]), tf.Variable([3], dtype=tf.int32)
    before = multi_worker.state_fingerprint([a, b])
    assert before == multi_worker.state_fingerprint([a, b])
    b.assign([4])
    assert multi_worker.state_fingerprint([a, b]) != before
    assert multi_worker.state_fingerprint([b, a]) != multi_worker.state_fingerprint([a, b])


class _Recorder:
    """Callback hooks in call order, as (hook, epoch or step)."""

    def __init__(self):
        import keras

        calls = self.calls = []

        class Record(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                calls.append(("train_begin", None))

            def on_epoch_begin(self, epoch, logs=None):
                calls.append(("epoch_begin", epoch))

            def on_train_batch_end(self, batch, logs=None):
                calls.append(("batch_end", batch))

            def on_epoch_end(self, epoch, logs=None):
                calls.append(("epoch_end", epoch))

            def on_train_end(self, logs=None):
                calls.append(("train_end", None))

        self.callback = Record()


def test_custom_loop_trains_as_fit_does():
    """Same model, batches and callbacks: fit and the loop end with the same
    weights, per-epoch logs and callback calls (default strategy, one replica)."""
    import keras
    import tensorflow as tf
    from i2a_tf.training.callbacks import EpochClock

    batch = tiny_batch()
    results = {}
    for loop in ("fit", "custom"):
        keras.utils.set_random_seed(0)
        model = tiny_model(tiny_config(dropout=0.0, epochs=3))
        set_tiny_state(model)
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
        recorder = _Recorder()
        callbacks = [EpochClock(), recorder.callback]
        if loop == "fit":
            history = model.fit(dataset, epochs=3, steps_per_epoch=2, verbose=0,
                                callbacks=callbacks, shuffle=False)
        else:
            history = multi_worker.fit_with_loop(
                model, tf.distribute.get_strategy(), dataset, epochs=3,
                steps_per_epoch=2, callbacks=callbacks, state_variables=model.weights)
        results[loop] = (model.get_weights(), history.history, recorder.calls,
                         int(model.classifier_optimizer.iterations.numpy()))
    fit_weights, fit_logs, fit_calls, fit_steps = results["fit"]
    loop_weights, loop_logs, loop_calls, loop_steps = results["custom"]
    assert loop_calls == fit_calls and fit_steps == loop_steps == 6
    assert set(loop_logs) == set(fit_logs)
    for name in fit_logs:
        np.testing.assert_allclose(loop_logs[name], fit_logs[name], rtol=1e-6, err_msg=name)
    for fit_value, loop_value in zip(fit_weights, loop_weights):
        np.testing.assert_allclose(loop_value, fit_value, rtol=1e-6, atol=1e-7)


def test_custom_loop_resumes_where_backup_and_restore_says():
    import keras
    import tensorflow as tf

    model = tiny_model(tiny_config(epochs=3))
    set_tiny_state(model)
    recorder = _Recorder()

    class Restore(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model._initial_epoch = 2  # as BackupAndRestore's restore sets it

    history = multi_worker.fit_with_loop(
        model, tf.distribute.get_strategy(),
        tf.data.Dataset.from_tensors(tiny_batch()).repeat(), epochs=3,
        steps_per_epoch=1, callbacks=[Restore(), recorder.callback],
        state_variables=model.weights)
    assert history.epoch == [2]
    assert [c for c in recorder.calls if c[0] == "epoch_begin"] == [("epoch_begin", 2)]


# -- The launcher (no TensorFlow in its workers) ----------------------------------------

def _launch(*command, **popen):
    return subprocess.Popen(
        [sys.executable, LAUNCHER, "--num_workers=2", "--grace=2", "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


class _Lines:
    """Collects a process's output lines on a thread."""

    def __init__(self, process):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(process.stdout,),
                                       daemon=True)
        self.thread.start()

    def _read(self, pipe):
        for line in iter(pipe.readline, ""):
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern, timeout_s):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in {timeout_s} s: "
                             f"{self.lines[-20:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _worker_pids(lines):
    return [int(lines.wait_for(rf"\[launcher\] worker {i}: pid (\d+)", 30).group(1))
            for i in range(2)]


def test_launcher_gives_each_worker_its_task_and_prefixes_its_output():
    script = ("import json, os; c = json.loads(os.environ['TF_CONFIG']); "
              "print('task', c['task']['index'], 'of', len(c['cluster']['worker']), "
              "c['cluster']['worker'][c['task']['index']])")
    process = _launch(sys.executable, "-c", script)
    lines = _Lines(process)
    assert process.wait(timeout=60) == 0
    lines.thread.join(timeout=10)
    tasks = [line for line in lines.lines if " task " in line]
    assert sorted(line.split()[:4] for line in tasks) == [
        ["[worker", "0]", "task", "0"], ["[worker", "1]", "task", "1"]]
    addresses = [line.split()[-1] for line in tasks]
    assert len(set(addresses)) == 2 and all(a.startswith("127.0.0.1:") for a in addresses)


def test_launcher_stops_every_worker_when_one_fails():
    script = ("import json, os, sys, time; i = json.loads(os.environ['TF_CONFIG'])"
              "['task']['index']\nif i == 1: sys.exit(3)\ntime.sleep(600)")
    process = _launch(sys.executable, "-c", script)
    lines = _Lines(process)
    pids = _worker_pids(lines)
    assert process.wait(timeout=60) == 3
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_launcher_stops_every_worker_when_interrupted(signum):
    process = _launch(sys.executable, "-c", "import time; time.sleep(600)")
    lines = _Lines(process)
    pids = _worker_pids(lines)
    assert all(_alive(pid) for pid in pids)
    process.send_signal(signum)
    assert process.wait(timeout=60) == 128 + signum
    assert not any(_alive(pid) for pid in pids)


# -- Two real workers -------------------------------------------------------------------

# A run that collects pseudo-labels and refreshes banks each epoch.
RUN = ("--flagfile=configs/demo.cfg", *TINY_TRAIN, "--warmup_epochs=1",
       "--pseudo_label_every=1", "--nopseudo_label_agreement", "--verbose=2")


def _prepared(tmp_path, name="data_source"):
    source = str(tmp_path / name)
    result = run_main(*RUN, "--mode=prepare", f"--workdir={source}")
    assert result.returncode == 0, result.stderr[-3000:]
    return source


def _copy_data(source, workdir):
    os.makedirs(workdir)
    shutil.copytree(os.path.join(source, "data"), os.path.join(workdir, "data"))


def _launch_train(workdir, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    return _launch(
        sys.executable, "-m", "i2a_tf.main", *RUN, "--mode=train", f"--workdir={workdir}",
        "--strategy=multi_worker", *flags, cwd=REPO_ROOT, env=env)


def _fingerprints(lines, worker):
    return re.findall(rf"\[worker {worker}\] .*(epoch \d+|end of training): "
                      r"(?:training )?state fingerprint (\w+)", "\n".join(lines))


@pytest.mark.slow
def test_two_workers_train_as_one_process_over_two_replicas(tmp_path):
    """2 workers (1 replica each) end with the weights of one process over 2
    replicas, reading the same per-replica shards (--replica_input_pipelines)
    through the same loop; every refresh gives both workers the same state."""
    import keras

    source = _prepared(tmp_path)
    steps = ("--epochs=3", "--steps_per_epoch=2")
    single, cluster = str(tmp_path / "single"), str(tmp_path / "cluster")
    _copy_data(source, single)
    _copy_data(source, cluster)
    reference = run_main(*RUN, *steps, "--mode=train", f"--workdir={single}",
                         "--strategy=mirrored", "--num_cpu_devices=2",
                         "--replica_input_pipelines", "--training_loop=custom")
    assert reference.returncode == 0, reference.stderr[-3000:]

    process = _launch_train(cluster, *steps)
    lines = _Lines(process)
    assert process.wait(timeout=600) == 0, "\n".join(lines.lines[-40:])
    lines.thread.join(timeout=10)

    # Same weights, per-epoch logs and pseudo-labels as the single process.
    a = keras.saving.load_model(os.path.join(single, "classifier.keras"))
    b = keras.saving.load_model(os.path.join(cluster, "classifier.keras"))
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
    with open(os.path.join(single, "history.json")) as f:
        single_history = json.load(f)
    with open(os.path.join(cluster, "history.json")) as f:
        cluster_history = json.load(f)
    assert cluster_history["classifier_steps"] == single_history["classifier_steps"] == 6
    for name, values in single_history["logs"].items():
        np.testing.assert_allclose(cluster_history["logs"][name], values, rtol=1e-5,
                                   err_msg=name)
    with open(os.path.join(single, "pseudo_labels.json")) as f:
        single_refreshes = json.load(f)
    with open(os.path.join(cluster, "pseudo_labels.json")) as f:
        assert json.load(f) == single_refreshes
    assert any(r["num_collected"] > 0 for r in single_refreshes)

    # Both workers held the same banks, pseudo-labels and weights at every
    # epoch start and at the end (the single process too).
    chief, worker = _fingerprints(lines.lines, 0), _fingerprints(lines.lines, 1)
    assert len(chief) == 4 and chief == worker
    single_prints = re.findall(r"(epoch \d+|end of training): (?:training )?state "
                               r"fingerprint (\w+)", reference.stdout + reference.stderr)
    assert single_prints == chief

    # Only the chief wrote: outputs in the workdir, the worker's folder removed.
    assert os.path.exists(os.path.join(cluster, "metrics.json"))
    assert sorted(os.listdir(os.path.join(cluster, "logs"))) == ["active_run", "run-001"]
    assert glob.glob(os.path.join(cluster, "logs", "run-001", "train", "events.*"))
    assert not [n for n in os.listdir(cluster) if n.startswith("workertemp")]
    epoch_lines = [line for line in lines.lines if re.match(r"\[worker \d\] Epoch ", line)]
    assert len(epoch_lines) == 3 and all(line.startswith("[worker 0]") for line in epoch_lines)


@pytest.mark.slow
def test_killed_worker_resumes_from_the_chiefs_backup(tmp_path):
    """Kill a worker mid-run: the launcher stops the other; a new launch
    resumes both at the chief's checkpointed epoch and finishes the run."""
    source = _prepared(tmp_path)
    workdir = str(tmp_path / "cluster")
    _copy_data(source, workdir)
    steps = ("--epochs=5", "--steps_per_epoch=3")
    metadata = os.path.join(workdir, "backup", "training_metadata.json")
    process = _launch_train(workdir, *steps)
    lines = _Lines(process)
    try:
        pids = _worker_pids(lines)
        deadline = time.time() + 400
        while not os.path.exists(metadata) and process.poll() is None:
            assert time.time() < deadline, "no checkpoint within 400 s"
            time.sleep(0.05)
        os.kill(pids[1], signal.SIGKILL)
        assert process.wait(timeout=120) == 128 + signal.SIGKILL, lines.lines[-20:]
        assert not any(_alive(pid) for pid in pids)
    finally:
        if process.poll() is None:
            process.kill()
    with open(metadata) as f:
        done = json.load(f)["epoch"]
    assert 1 <= done < 5

    process = _launch_train(workdir, *steps)
    lines = _Lines(process)
    assert process.wait(timeout=600) == 0, "\n".join(lines.lines[-40:])
    lines.thread.join(timeout=10)
    epoch_lines = [line for line in lines.lines if line.startswith("[worker 0] Epoch ")]
    assert epoch_lines[0].startswith(f"[worker 0] Epoch {done + 1}/5"), epoch_lines
    chief, worker = _fingerprints(lines.lines, 0), _fingerprints(lines.lines, 1)
    assert chief == worker and chief[0][0] == f"epoch {done + 1}"
    with open(os.path.join(workdir, "history.json")) as f:
        history = json.load(f)
    assert history["epochs"] == list(range(done + 1, 6))
    assert history["classifier_steps"] == 5 * 3
    assert not [n for n in os.listdir(workdir) if n.startswith("workertemp")]
