"""A quiet console: TensorFlow's native start-up chatter kept off stderr.

TensorFlow 2.21 writes its C++ log lines (the oneDNN and CPU-feature notices,
CUDA probing on a machine without a GPU, XLA and TFLite-converter progress)
straight to file descriptor 2, some before `TF_CPP_MIN_LOG_LEVEL` is read and
some at ERROR level although nothing is wrong (`failed call to cuInit`). Python
cannot intercept writes to a file descriptor, so `route_stderr_through_filter`
points descriptor 2 of this process at a pipe read by a small separate process
(this file, run as a script) that copies every line to the real stderr except
the native noise. A separate process, not a thread: if this process aborts,
the filter still reads the pipe to its end, so a fatal message is never lost.

What is dropped: native (`.cc` / `.h`) INFO and WARNING lines and their known
continuation lines, absl's "before absl::InitializeLog()" notice, and native
ERROR lines from the CUDA probing files. Native ERROR lines from anywhere else,
every FATAL line, and everything Python writes pass through. `--verbosity=1`
(or higher), or I2A_NATIVE_LOGS=1 in the environment, shows everything.

Standard library only: the filter process runs this file by path.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys

# I1130 15:36:36.362707   13993 port.cc:153] ...  (also "I0000 00:00:1796052988.302115")
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w./+-]+\.(?:cc|h|cpp|c)):\d+\]")
_BENIGN_ERROR_FILES = re.compile(r"(^|/)(cuda_\w+|cudart_stub|gpu_\w+|cuda)\.cc$")
_NOISE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "To enable the following instructions:",  # continues cpu_feature_guard.cc's notice
    "fully_quantize: ",  # the TFLite quantizer's settings, printed per conversion
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",  # LiteRT, per interpreter
)
FILTERED_ENV = "I2A_STDERR_FILTERED"
SHOW_ENV = "I2A_NATIVE_LOGS"


def is_native_noise(line: str) -> bool:
    """True for a line the quiet console drops (see the module docstring)."""
    if line.startswith(_NOISE_LINES):
        return True
    match = _NATIVE_LINE.match(line)
    if match is None:
        return False
    severity, source = match.groups()
    if severity in "IW":
        return True
    return severity == "E" and bool(_BENIGN_ERROR_FILES.search(source))


def filter_lines(source, sink) -> None:
    """Copies the lines of binary stream `source` to `sink`, dropping noise."""
    for raw in iter(source.readline, b""):
        if not is_native_noise(raw.decode("utf-8", "replace")):
            sink.write(raw)
            sink.flush()


def route_stderr_through_filter() -> None:
    """Sends this process's descriptor 2 (and its children's) through the
    filter process. Does nothing when already filtered (a parent did it) or
    when I2A_NATIVE_LOGS=1."""
    if os.environ.get(FILTERED_ENV) == "1" or os.environ.get(SHOW_ENV) == "1":
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen([sys.executable, "-S", os.path.abspath(__file__)],
                                   stdin=read_end, stdout=2, stderr=subprocess.DEVNULL)
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    os.environ[FILTERED_ENV] = "1"

    def close():
        # The filter exits at end of input: once every holder of the pipe
        # (this process, and children still running) has closed it.
        try:
            sys.stderr.flush()
            os.close(2)
            process.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass

    atexit.register(close)


if __name__ == "__main__":
    filter_lines(sys.stdin.buffer, sys.stdout.buffer)
