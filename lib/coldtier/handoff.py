"""The driver's side of the launcher (``coldtier.submit``): how a Python driver under
scripts/spark-submit.sh tells the launcher its pid (signals are forwarded to it) and sends its
messages to the launcher's stderr."""

from __future__ import annotations

import os
import stat
import sys

# where the driver writes its pid: the launcher forwards SIGTERM/SIGINT to it
DRIVER_PIDFILE_VAR = "COLDTIER_DRIVER_PIDFILE"
# the launcher's end of the driver's stderr (a FIFO): spark-submit's PythonRunner merges the
# Python driver's stderr into its stdout, so the driver writes its messages here instead
DRIVER_STDERR_VAR = "COLDTIER_DRIVER_STDERR"


def write_pidfile() -> None:
    """Under the launcher: this process is the driver that stop signals go to."""
    path = os.environ.get(DRIVER_PIDFILE_VAR)
    if path:
        with open(path, "w") as fh:
            fh.write(str(os.getpid()))


def attach_stderr() -> None:
    """In the driver: send this process's stderr to the launcher's (``supervise``) instead of
    spark-submit's stdout, where PythonRunner would merge it with the progress JSON. Nothing
    happens outside the launcher (a plain ``python -m coldtier``, a driver in the cluster)."""
    path = os.environ.pop(DRIVER_STDERR_VAR, None)
    if not path:
        return
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            return
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: the launcher is gone
    except OSError:
        return
    os.set_blocking(fd, True)
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)
