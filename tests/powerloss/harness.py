"""Mounting the power-loss file system (``lazyfs.py``) from tests: crash, then reboot.

::

    with LazyMount(backing_dir) as mount:      # mounts at a new temporary folder: mount.path
        ...  # run programs on mount.path, kill -9 them
        mount.crash()     # power cut: the backing folder keeps only what was made durable
        mount.remount()   # reboot: unmount, then mount the backing folder afresh
        ...  # check what survived, on mount.path (or read backing_dir directly)

Semantics (LazyFS's model, see ``lazyfs.py``): a file's data and size are durable once the
file is fsynced; a name (a created, renamed or unlinked entry) once its folder is fsynced. A
file created and written but never fsynced comes back empty if its folder was fsynced, and not
at all otherwise; a file fsynced whose folder never was does not come back; a rename over a
file not followed by an fsync of the folder leaves the old file under the name.

- ``crash()`` drops everything not durable and rewrites the backing folder to the durable
  state; from then until the unmount every operation on the mount fails with EIO. Kill the
  programs using the mount first (a crash does not stop them).
- ``remount()`` unmounts (lazily if something still holds the mount) and mounts again: after a
  crash that is the reboot; without one it is a clean shutdown, after which everything written
  is durable, as the kernel syncs at shutdown.
- ``sync()`` makes everything durable now; ``stats()`` returns the file system's counters.
- Leaving the ``with`` block unmounts (cleanly, unless crashed) and removes the temporary
  mount point and scratch folders; the backing folder is kept. Every process the mount starts
  is stopped by its pid, also when the block fails.

``require_fuse()`` skips the calling test where FUSE cannot be used here (no /dev/fuse, no
fusermount, not root, no fusepy or libfuse, or a test mount fails), and fails it instead under
``CI=true``, where the power-loss tests must run. ``scripts/fuse.sh`` installs what it needs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

LAZYFS = Path(__file__).with_name("lazyfs.py")
MOUNT_TIMEOUT = 20.0
UNMOUNT_TIMEOUT = 20.0
BUSY_TIMEOUT = 3.0


class LazyMount:
    """A mounted lazyfs over a backing folder (see the module docstring)."""

    def __init__(self, backing: Path | str, *, mountpoint: Path | str | None = None) -> None:
        self.backing = Path(backing).resolve()
        self.backing.mkdir(parents=True, exist_ok=True)
        self._scratch = Path(tempfile.mkdtemp(prefix="lazymount-"))
        self.path = Path(mountpoint) if mountpoint else self._scratch / "mnt"
        self.path.mkdir(parents=True, exist_ok=True)
        self._socket = str(self._scratch / "control.sock")
        # Scratch beside the backing folder: the same file system, so mounting hard-links the
        # backing files instead of copying them.
        self._state = Path(tempfile.mkdtemp(prefix=".lazymount-", dir=self.backing.parent))
        self.log_path = self._scratch / "lazyfs.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.mounts = 0

    def __enter__(self) -> LazyMount:
        try:
            self.mount()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def mount(self) -> None:
        """Mount the backing folder at ``path`` and wait until it answers."""
        if self.process is not None:
            raise RuntimeError("already mounted")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(LAZYFS),
                    str(self.backing),
                    str(self.path),
                    "--control",
                    self._socket,
                    "--state",
                    str(self._state),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.mounts += 1
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"lazyfs exited before mounting:\n{self.log()}")
            if is_mounted(self.path):
                try:
                    if self._command("ping") == "ok":
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.unmount()
        raise RuntimeError(f"lazyfs did not mount within {MOUNT_TIMEOUT} s:\n{self.log()}")

    def crash(self) -> None:
        """Power cut: drop all unsynced data and folder entries (the mount goes dead)."""
        reply = self._command("crash")
        if reply != "ok":
            raise RuntimeError(f"lazyfs crash failed: {reply}\n{self.log()}")

    def sync(self) -> None:
        """Make everything on the mount durable now."""
        reply = self._command("sync")
        if reply != "ok":
            raise RuntimeError(f"lazyfs sync failed: {reply}")

    def stats(self) -> dict[str, object]:
        """The file system's counters (writes, fsyncs, fsyncdirs, dirty files and bytes)."""
        result: dict[str, object] = json.loads(self._command("stats"))
        return result

    def remount(self) -> None:
        """Reboot: unmount, then mount the backing folder again."""
        self.unmount()
        self.mount()

    def unmount(self) -> None:
        """Unmount and stop the file system's process (by its pid, whatever happens)."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            wait = UNMOUNT_TIMEOUT
            if is_mounted(self.path) and not self._fusermount("-u"):
                # Busy: a process still has a file or its folder there, maybe one just
                # killed and not yet gone. Retry briefly, then detach it: the file system
                # finishes when the last user lets go, or is killed below.
                deadline = time.monotonic() + BUSY_TIMEOUT
                while not self._fusermount("-u") and time.monotonic() < deadline:
                    time.sleep(0.1)
                if is_mounted(self.path):
                    self._fusermount("-u", "-z")
                    wait = BUSY_TIMEOUT
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        finally:
            hung = process.poll() is None
            if hung:
                process.kill()
                process.wait(timeout=UNMOUNT_TIMEOUT)
            if is_mounted(self.path):
                self._fusermount("-u", "-z")
        if hung:
            # Killed before it could finish the unmount: the backing folder may not hold what
            # the test expects, so say so rather than let a later check fail obscurely.
            self._note(f"lazyfs (pid {process.pid}) did not exit after unmounting: killed")
            raise RuntimeError(f"lazyfs did not exit after unmounting:\n{self.log()}")

    def close(self) -> None:
        """Unmount and remove the scratch folders (the backing folder stays)."""
        try:
            self.unmount()
        finally:
            shutil.rmtree(self._state, ignore_errors=True)
            if not is_mounted(self.path):
                shutil.rmtree(self._scratch, ignore_errors=True)

    def log(self) -> str:
        """What the file system process printed."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _fusermount(self, *flags: str) -> bool:
        done = subprocess.run(
            ["fusermount", *flags, str(self.path)], capture_output=True, check=False
        )
        if done.returncode != 0:
            self._note(f"fusermount {' '.join(flags)}: {done.stderr.decode(errors='replace')}")
        return done.returncode == 0

    def _note(self, text: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"harness: {text}\n")

    def _command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(self._socket)
            sock.sendall(command.encode() + b"\n")
            with sock.makefile("r", encoding="utf-8") as stream:
                return stream.readline().strip()


def is_mounted(path: Path) -> bool:
    """Whether something is mounted at path, even a FUSE mount whose process died (which
    ``os.path.ismount`` misses: stat fails there with ENOTCONN)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            # Field 5 is the mount point, with spaces and the like escaped in octal.
            point = line.split()[4].encode().decode("unicode_escape")
            if point == target:
                return True
    return False


@functools.cache
def fuse_unavailable_reason() -> str | None:
    """Why lazyfs cannot be mounted here, or None when a trial mount worked."""
    if not sys.platform.startswith("linux"):
        return "FUSE tests need Linux"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if shutil.which("fusermount") is None:
        return "fusermount is not installed (scripts/fuse.sh installs it)"
    if os.geteuid() != 0:
        return "FUSE tests mount file systems and must run as root"
    try:
        import fuse  # noqa: F401  (fusepy; loads libfuse2 on import)
    except (ImportError, OSError) as e:
        return f"fusepy or libfuse2 is missing ({e}; scripts/fuse.sh installs them)"
    backing = Path(tempfile.mkdtemp(prefix="lazyfs-probe-"))
    try:
        with LazyMount(backing / "root") as mount:
            (mount.path / "probe").write_bytes(b"ok")
    except Exception as e:
        return f"a trial FUSE mount failed: {e}"
    finally:
        shutil.rmtree(backing, ignore_errors=True)
    return None


def require_fuse() -> None:
    """Skip the test where FUSE is unavailable; fail it under CI=true."""
    reason = fuse_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"power-loss tests must run under CI=true, but {reason}")
    pytest.skip(reason)
