"""``--workers N``: a supervisor process running N worker processes of one node.

Each worker is the same ``pullkv`` command started again with a hidden ``--worker-index``,
so every option (TLS, cache, feed, limits) reaches it as the operator wrote it. Each worker
listens on the node's host and port with ``SO_REUSEPORT``: the kernel spreads connections
over them. The supervisor binds nothing; it checks the port is free first (a socket without
``SO_REUSEPORT`` there would refuse the workers anyway, and two supervisors must not share a
port silently), and keeps a private runtime folder for what the workers share
(``siblings``).

The supervisor restarts a worker that dies (logged with its exit status or signal, counted in
``pullkv_worker_restarts_total``), after a delay that grows while a worker keeps dying young
(``RestartPolicy``, policy as data). A worker that dies before it ever listened on its first
start means the node cannot start: every worker is stopped and the supervisor exits 1. On
SIGTERM or SIGINT it forwards the signal (a second one too, which makes workers drop what is
left) and exits once all have drained: 0 if they all exited cleanly.

Workers hold the data folder's lock with the supervisor: they inherit its descriptor, so the
folder stays refused to other servers until the last of them exits, even after a kill -9 of
the supervisor (a worker whose supervisor died gets SIGTERM from the kernel and drains).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from pullkv.siblings import HASH_SEED_ENV, WrittenVersions, ready_marker, versions_path

log = logging.getLogger("pullkv.workers")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_POLL = 0.05
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead worker is started again: at once after a long life; after a delay that
    doubles (up to ``max_delay``) while it keeps dying within ``stable_after`` seconds."""

    first_delay: float = 0.1
    factor: float = 2.0
    max_delay: float = 10.0
    stable_after: float = 30.0


def restart_delay(policy: RestartPolicy, early_deaths: int) -> float:
    """Seconds before the next start of a worker that died young ``early_deaths`` times in a
    row (0: it had lived long enough)."""
    if early_deaths <= 0:
        return 0.0
    return min(policy.max_delay, policy.first_delay * policy.factor ** (early_deaths - 1))


def describe_exit(returncode: int) -> str:
    """An exit status as the log says it: ``status 1`` or ``signal SIGKILL``."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


_RUNTIME_PREFIX = "pullkv-workers-"


def runtime_folder() -> Path:
    """A private folder for the workers' shared state: in memory (/dev/shm) when there is one.
    Its name holds the supervisor's pid, so that folders left by a supervisor killed with
    SIGKILL (which removes nothing) are removed by the next one."""
    base = Path("/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else tempfile.gettempdir())
    for left in base.glob(f"{_RUNTIME_PREFIX}*-*"):
        pid = left.name.removeprefix(_RUNTIME_PREFIX).split("-")[0]
        if pid.isdigit() and left.stat().st_uid == os.getuid() and not _alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_RUNTIME_PREFIX}{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_port_free(host: str, port: int) -> int:
    """Refuse a port something listens on; pick one for port 0. Returns the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the workers' listeners do: a port in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Runs in the child before exec: SIGTERM when the supervisor dies (Linux)."""

    def setup() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    early_deaths: int = 0
    restart_at: float | None = None
    ever_ready: bool = False
    reported: bool = False  # its exit while draining was logged


@dataclass
class Supervisor:
    """Runs ``count`` workers; ``command(index)`` is a worker's command line."""

    count: int
    command: Callable[[int], Sequence[str]]
    runtime: Path
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    pass_fds: tuple[int, ...] = ()
    hash_seed: int = 0  # every worker's PYTHONHASHSEED (siblings: the shared table's slots)
    clock: Callable[[], float] = time.monotonic
    _stopping: bool = False
    _signals: int = 0
    _forward: int = signal.SIGTERM

    def run(self) -> int:
        """Start the workers and supervise them until they have all drained; the exit
        status for the supervisor."""
        table = WrittenVersions.create(versions_path(self.runtime), self.hash_seed)
        workers = [_Worker(i) for i in range(self.count)]
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        try:
            for worker in workers:
                self._start(worker)
            return self._supervise(workers, table)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            table.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if not self._stopping:
            log.info("%s received: draining %d workers", signal.Signals(signum).name, self.count)
        self._stopping = True
        self._forward = signum

    def _start(self, worker: _Worker) -> None:
        ready_marker(self.runtime, worker.index).unlink(missing_ok=True)
        worker.process = subprocess.Popen(
            list(self.command(worker.index)),
            env={**os.environ, HASH_SEED_ENV: str(self.hash_seed)},
            pass_fds=self.pass_fds,
            # Its own process group: a Ctrl-C at the terminal reaches the supervisor alone,
            # which forwards it once (a second SIGINT would make a worker drop what is left).
            process_group=0,
            # preexec_fn is safe here: the supervisor runs no threads.
            preexec_fn=_die_with_parent(os.getpid()),
        )
        worker.started = self.clock()
        worker.restart_at = None
        log.info("worker %d started, pid %d", worker.index, worker.process.pid)

    def _supervise(self, workers: list[_Worker], table: WrittenVersions) -> int:
        forwarded = 0
        failed = False
        all_ready = False
        while True:
            if self._stopping and forwarded < self._signals:
                forwarded = self._signals
                for worker in workers:
                    if worker.process is not None and worker.process.poll() is None:
                        worker.process.send_signal(self._forward)
            now = self.clock()
            for worker in workers:
                failed |= self._check(worker, table, now)
            if failed and not self._stopping:
                self._stopping = True
                self._forward = signal.SIGTERM
                self._signals += 1
                continue
            if not all_ready and all(w.ever_ready for w in workers):
                all_ready = True
                log.info("all %d workers are serving", self.count)
            running = [w for w in workers if w.process is not None and w.process.poll() is None]
            if self._stopping and not running:
                # A worker waiting to be restarted has no process; its death was logged.
                ended = [w.process for w in workers if w.process is not None]
                clean = all(process.returncode == 0 for process in ended)
                return 0 if clean and not failed else 1
            time.sleep(_POLL)

    def _check(self, worker: _Worker, table: WrittenVersions, now: float) -> bool:
        """Notice a worker's readiness or death; restart it when due. True: the node cannot
        start (a worker died before it ever listened)."""
        process = worker.process
        if process is None:
            if worker.restart_at is not None and now >= worker.restart_at and not self._stopping:
                self._start(worker)
            return False
        if not worker.ever_ready and ready_marker(self.runtime, worker.index).exists():
            worker.ever_ready = True
        code = process.poll()
        if code is None:
            return False
        if self._stopping:
            if code != 0 and not worker.reported:
                worker.reported = True
                log.warning(
                    "worker %d (pid %d) exited: %s", worker.index, process.pid, describe_exit(code)
                )
            return False
        worker.process = None
        if not worker.ever_ready:
            log.error(
                "worker %d (pid %d) exited before it could serve (%s): stopping the node",
                worker.index,
                process.pid,
                describe_exit(code),
            )
            worker.process = process
            return True
        lived = now - worker.started
        worker.early_deaths = worker.early_deaths + 1 if lived < self.policy.stable_after else 0
        delay = restart_delay(self.policy, worker.early_deaths)
        table.count_restart()
        log.warning(
            "worker %d (pid %d) died: %s after %.1f s; restarting in %.1f s (restart %d)",
            worker.index,
            process.pid,
            describe_exit(code),
            lived,
            delay,
            table.restarts,
        )
        worker.restart_at = now + delay
        return False


def supervise(
    count: int,
    command: Callable[[int, Path], Sequence[str]],
    *,
    pass_fds: tuple[int, ...] = (),
    policy: RestartPolicy | None = None,
) -> int:
    """Run ``count`` workers under a supervisor in a fresh runtime folder (removed after);
    ``command(index, runtime)`` is a worker's command line. Returns the exit status."""
    runtime = runtime_folder()
    try:
        supervisor = Supervisor(
            count,
            lambda index: command(index, runtime),
            runtime,
            policy or RestartPolicy(),
            pass_fds,
            hash_seed(os.environ),
        )
        return supervisor.run()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def hash_seed(environ: Mapping[str, str]) -> int:
    """The workers' shared hash seed: the operator's ``PYTHONHASHSEED`` if they set a number,
    else a random one (secret, as Python's own per-process seed is)."""
    given = environ.get(HASH_SEED_ENV, "")
    if given.isdigit():
        return int(given)
    return 1 + secrets.randbelow(2**32 - 1)


def worker_command(argv: Sequence[str], index: int, runtime: Path) -> list[str]:
    """A worker's command line: this pullkv with ``argv`` and the hidden worker options."""
    return [
        sys.executable,
        "-m",
        "pullkv",
        *argv,
        "--worker-index",
        str(index),
        "--worker-runtime",
        str(runtime),
    ]
