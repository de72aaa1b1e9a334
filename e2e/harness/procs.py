"""Process lifecycle for everything the e2e suite runs: brokers, cluster nodes, benchmark systems.

    class MyNode(Process):                   # subclasses say how to start and where the logs are
        label = "node 1"
    p.spawn(cmd, log_path, header)           # Popen in its own session, output appended to the log
    p.alive(); p.pid
    p.kill9()                                # SIGKILL: no shutdown hooks, nothing flushed
    p.terminate(timeout)                     # SIGTERM, wait; SIGKILL after timeout
    p.sigstop(); p.sigcont()                 # freeze / thaw (p.paused says which)
    p.log_tail(lines)                        # the logs' last lines, for failure messages

A process is either our child (`self.proc`, a Popen) or a daemon started by a script that
writes its pid to `self.pid_file` (Apache Kafka via e2e/kafka/start). `expect_running` is what
the fixtures check after a test: a process that died without the test killing it fails it.
Restart on the same data is the subclasses' start() again: data directory and ports are fixed
when the object is made.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness import kproto

CLK_TCK = os.sysconf("SC_CLK_TCK")


class StartError(AssertionError):
    """A process did not start or did not become ready (the message carries its log tail)."""


def pid_state(pid):
    """The process state letter from /proc (R, S, T, Z, ...) or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError, OSError):
        return None


def pid_alive(pid):
    """Running or stopped; a zombie counts as dead (it only waits for its parent to reap it)."""
    st = pid_state(pid)
    return st is not None and st not in ("Z", "X")


def proc_cpu_s(pid):
    """User + system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_status_kb(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...), or None."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def http_status(url, timeout=2.0):
    """The HTTP status of a GET (4xx/5xx included); connection errors raise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def http_text(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode(errors="replace")


class Process:
    label = "process"  # names it in messages
    proc = None  # the Popen, when we are its parent
    pid_file = None  # else: a file with its pid (written by a start script)

    def __init__(self):
        self.expect_running = False
        self.paused = False
        self.starts = 0
        self.spawned_ns = None  # time.monotonic_ns() just before the last Popen
        self.spawned_wall_ns = None  # time.time_ns() at the same moment

    # --- state ---------------------------------------------------------
    @property
    def pid(self):
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        if self.pid_file is not None:
            try:
                return int(self.pid_file.read_text().strip())
            except (OSError, ValueError):
                return None
        return None

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def rss_bytes(self):
        try:
            kb = proc_status_kb(self.pid, "VmRSS")
            return kb * 1024 if kb is not None else None
        except (OSError, TypeError):
            return None

    # --- start ---------------------------------------------------------
    def spawn(self, cmd, log_path, header=None, env=None, cwd=None):
        """Start `cmd` as our child, stdout+stderr appended to log_path after a header line.
        Its own session: a signal for the test run's process group does not reach it, and
        the watchdog (below) is what cleans up after a dead test run."""
        self.starts += 1
        self.spawn_log = Path(log_path)
        self.spawn_log_offset = self.spawn_log.stat().st_size if self.spawn_log.exists() else 0
        with open(log_path, "ab") as log:
            if header:
                log.write(f"\n===== {header}\n".encode())
                log.flush()
            self.spawned_wall_ns = time.time_ns()
            self.spawned_ns = time.monotonic_ns()
            self.proc = subprocess.Popen(
                [str(c) for c in cmd],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.expect_running = True
        self.paused = False
        return self.proc

    def output(self):
        """What the process has written to its log since its last spawn."""
        with open(self.spawn_log, "rb") as f:
            f.seek(self.spawn_log_offset)
            return f.read().decode(errors="replace")

    # --- signals -------------------------------------------------------
    def kill9(self, missing_ok=False):
        """SIGKILL (a SIGSTOPped process dies too) and wait until it is gone. Not running:
        AssertionError, unless missing_ok."""
        pid = self.pid
        if pid is None or not self.alive():
            if not missing_ok:
                raise AssertionError(f"kill9: {self.label} is not running")
            self._after_exit()
            return
        self.expect_running = False
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
        else:
            os.kill(pid, signal.SIGKILL)
            self.reap(pid, 30)
        self.paused = False
        self._after_exit()

    def terminate(self, timeout=30, quiet=False):
        """SIGTERM (after SIGCONT if it is paused) and wait; SIGKILL after `timeout` s. Returns
        ms from SIGTERM to exit, None if it had to be killed; 0.0 if it was not running."""
        self.expect_running = False
        pid = self.pid
        if pid is None or not self.alive():
            self._after_exit()
            return 0.0
        if self.paused:
            self.sigcont()
        t0 = time.monotonic_ns()
        os.kill(pid, signal.SIGTERM)
        try:
            self.reap(pid, timeout)
            ms = (time.monotonic_ns() - t0) / 1e6
        except AssertionError:
            if not quiet:
                self.note(f"no exit {timeout}s after SIGTERM, sending SIGKILL")
            os.kill(pid, signal.SIGKILL)
            self.reap(pid, 30)
            ms = None
        self._after_exit()
        return ms

    def sigstop(self):
        """Freeze it (a hung process, to its peers) until sigcont()."""
        pid = self.pid
        assert pid is not None and self.alive(), f"sigstop: {self.label} is not running"
        os.kill(pid, signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + 5
        while pid_state(pid) not in ("T", "t") and time.monotonic() < deadline:
            time.sleep(0.01)

    def sigcont(self):
        pid = self.pid
        assert pid is not None, f"sigcont: {self.label} has no process"
        os.kill(pid, signal.SIGCONT)
        self.paused = False

    def reap(self, pid, timeout):
        """Wait until pid is gone (our child: waited for, so no zombie stays)."""
        if self.proc is not None and self.proc.pid == pid:
            try:
                self.proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{self.label} pid {pid} still alive {timeout}s after the signal") from None
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label} pid {pid} still alive {timeout}s after the signal")
            time.sleep(0.01)  # fine-grained: the benchmark measures shutdown times with it

    def wait_exit(self, timeout):
        """True once it has exited, False if it still runs after timeout s."""
        pid = self.pid
        if pid is None:
            return True
        try:
            self.reap(pid, timeout)
            return True
        except AssertionError:
            return False

    def _after_exit(self):
        """Subclass hook: clean up after the process is gone (e.g. a stale pid file)."""

    # --- logs ----------------------------------------------------------
    def log_files(self):
        return []

    def note(self, text):
        """A line in the process's log, so the log shows what the harness did to it."""
        files = self.log_files()
        if not files:
            return
        try:
            with open(files[0], "ab") as log:
                log.write(f"\n===== e2e: {self.label}: {text} at {time.strftime('%H:%M:%S')}\n".encode())
        except OSError:
            pass

    def log_tail(self, lines=40):
        return kproto.log_tail(self.log_files(), lines, self.label)


# A watchdog process per test run part: it waits for EOF on its stdin (the test process closed it
# or died, even by abort or SIGKILL) and then SIGKILLs every process still running under its
# directory (pid files */pid, checked against /proc/PID/cmdline so that a reused pid is never
# hit). Without it a crashed test run leaves JVMs / brokers behind on the machine.
_WATCHDOG = r"""
import os, signal, sys
from pathlib import Path
root = sys.argv[1]
sys.stdin.buffer.read()
for pidfile in Path(root).rglob("pid"):
    try:
        pid = int(pidfile.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if root.encode() in f.read():
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
"""


class Watchdog:
    def __init__(self, root):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            pass
