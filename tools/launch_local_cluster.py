"""Runs one command as N workers of a local cluster (`--strategy=multi_worker`).

Picks N free loopback ports, starts the command N times, each with the
TF_CONFIG that names the cluster and its own task, and streams every worker's
output prefixed with `[worker i]`. Returns 0 when every worker succeeds, else
the exit status of the first worker that failed (128 + signal for a killed
one), 124 on --timeout.

The workers always stop with the launcher: each runs in its own process
group, which is terminated (SIGTERM, then SIGKILL after --grace seconds) when
the launcher returns, is interrupted (Ctrl-C, SIGTERM, SIGHUP) or when any
worker fails (the others would otherwise wait for it in a collective op
forever).

  python tools/launch_local_cluster.py --num_workers=2 -- \\
      python -m i2a_tf.main --flagfile=configs/demo.cfg --mode=train \\
      --strategy=multi_worker
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

TIMEOUT_STATUS = 124


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` right now (all bound at once, so
    they differ; another process could still take one before a worker binds)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses: list[str], index: int) -> str:
    """TF_CONFIG of worker `index` in a cluster of `addresses` (worker 0 is
    the chief)."""
    return json.dumps({"cluster": {"worker": addresses},
                       "task": {"type": "worker", "index": index}})


def exit_status(returncode: int) -> int:
    """A shell-style status: 128 + signal for a process killed by a signal."""
    return 128 - returncode if returncode < 0 else returncode


class LocalCluster:
    """N worker processes of one command, each in its own process group."""

    def __init__(self, command: list[str], num_workers: int, stream=None,
                 host: str = "127.0.0.1"):
        self.command = command
        self.num_workers = num_workers
        self.stream = stream or sys.stdout
        self.host = host
        self.processes: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        """Writes one line to the shared stream (whole lines, never interleaved)."""
        with self._lock:
            self.stream.write(line)
            self.stream.flush()

    def _pump(self, index: int, pipe) -> None:
        for line in iter(pipe.readline, ""):
            self.write(f"[worker {index}] {line.rstrip(chr(10))}\n")
        pipe.close()

    def start(self) -> None:
        addresses = [f"{self.host}:{p}" for p in free_ports(self.num_workers, self.host)]
        self.write(f"[launcher] cluster {', '.join(addresses)}\n")
        for index in range(self.num_workers):
            env = dict(os.environ, TF_CONFIG=tf_config(addresses, index),
                       PYTHONUNBUFFERED="1")
            process = subprocess.Popen(
                self.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True, errors="replace",
                start_new_session=True)  # its own process group: killpg reaches its children
            self.processes.append(process)
            self.write(f"[launcher] worker {index}: pid {process.pid}\n")
            thread = threading.Thread(target=self._pump, args=(index, process.stdout),
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait(self, timeout: float | None = None, poll_s: float = 0.1,
             interrupted=lambda: None) -> int:
        """Until every worker succeeded (0), one failed (its status),
        `timeout` seconds passed (TIMEOUT_STATUS) or `interrupted()` returns a
        signal number (128 + it)."""
        deadline = None if not timeout else time.monotonic() + timeout
        while True:
            signum = interrupted()
            if signum is not None:
                self.write(f"[launcher] {signal.Signals(signum).name}: stopping the "
                           "workers\n")
                return 128 + signum
            codes = [p.poll() for p in self.processes]
            for index, code in enumerate(codes):
                if code not in (None, 0):
                    self.write(f"[launcher] worker {index} failed with status "
                                f"{exit_status(code)}; stopping the others\n")
                    return exit_status(code)
            if all(code == 0 for code in codes):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                self.write(f"[launcher] timeout after {timeout:.0f} s; stopping the "
                            "workers\n")
                return TIMEOUT_STATUS
            time.sleep(poll_s)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to every live worker's process group, SIGKILL after
        `grace_s`; returns once all have exited and their output is flushed."""
        for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            live = [p for p in self.processes if p.poll() is None]
            for process in live:
                try:
                    os.killpg(process.pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            for process in live:
                try:
                    process.wait(max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    pass
        for process in self.processes:
            # A worker's own children (same group) were signalled with it.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for thread in self._threads:
            thread.join(timeout=5)


def run(command: list[str], num_workers: int, timeout: float | None = None,
        grace_s: float = 10.0, stream=None) -> int:
    """Starts the cluster, waits for it and always stops every worker."""
    cluster = LocalCluster(command, num_workers, stream=stream)
    # The handlers only note the first signal; the wait loop acts on it. An
    # exception raised from a handler could land anywhere, e.g. between a
    # lock's acquire and its `with` block, and leave the output lock held (the
    # launcher then hung on its own "stopping" line: seen once in CI). A
    # second signal, or one during the stop, changes nothing.
    received: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in handled}
    try:
        cluster.start()
        return cluster.wait(timeout, interrupted=lambda: received[0] if received else None)
    finally:
        try:
            cluster.stop(grace_s)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        usage="%(prog)s [--num_workers N] [--timeout S] [--grace S] -- COMMAND ...")
    parser.add_argument("--num_workers", type=int, default=2,
                        help="Worker processes to start (default 2).")
    parser.add_argument("--timeout", type=float, default=0,
                        help="Stop every worker after this many seconds (0 = never).")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="Seconds between SIGTERM and SIGKILL when stopping.")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="The worker command, after `--`.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command: give the worker command after `--`")
    if args.num_workers < 1:
        parser.error(f"--num_workers={args.num_workers}: must be >= 1")
    return run(command, args.num_workers, timeout=args.timeout or None,
               grace_s=args.grace)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
