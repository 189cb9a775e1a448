"""Run directories: where a pool's worker sockets live, and how a dead run is cleaned up.

Under a base directory (``PoolConfig.run_dir``; by default one per user) a
running pool holds ``<run_id>.lock`` locked (``flock``) and keeps its
workers' sockets and pid files in ``<run_id>/``. The kernel drops the lock
when the pool's process dies, however it dies, so a lock that can be taken
belongs to a dead run: the next pool to start under that base kills the
workers that run left (checked by their command line, so a reused pid is
never hit), every process below them (a worker is its tools' subreaper: they
stay below it, in any session), and every process that carries the run's
``SNAKEPIT_RUN_ID`` in its environment (what a tool started and left), and
removes its files.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import shutil
import signal
import stat
import tempfile
from pathlib import Path

from snakepit.errors import ConfigError
from snakepit.worker._descendants import descendants

__all__ = ("RunDir", "default_run_base")

logger = logging.getLogger("snakepit.pool")

#: Run ids (``uuid4().hex[:12]``) and the first bytes of a run's lock file:
#: a sweep touches nothing else.
_RUN_ID = re.compile(r"[0-9a-f]{12}")
_MARKER = b"snakepit run"

#: A unix socket path must fit in ``sun_path`` (108 bytes on Linux, 104 elsewhere).
MAX_SOCKET_PATH = 100


def default_run_base() -> Path:
    """``$XDG_RUNTIME_DIR/snakepit``, else ``<tmp>/snakepit-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "snakepit"
    return Path(tempfile.gettempdir()) / f"snakepit-{os.getuid()}"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()  # a symlink (planted in /tmp, say) is refused, not followed
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ConfigError(
            "run_dir",
            f"{path} must be a directory of this user, closed to others (mode 0700); "
            f"it has owner {st.st_uid}, mode {st.st_mode & 0o777:o}",
        )


def _is_worker_of(pid: int, run_id: str) -> bool:
    """True if ``pid`` is a snakepit worker started with ``--run-id run_id`` (Linux /proc).

    A worker forked by the run's fork server has the server's command line.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    run = run_id.encode()
    entry = b"snakepit.worker" in argv or b"snakepit.worker._forkserver" in argv
    return entry and any(a == b"--run-id" and b == run for a, b in itertools.pairwise(argv))


def _carries_run(pid: int, run_id: str) -> bool:
    """True if ``pid`` was started with ``SNAKEPIT_RUN_ID=run_id`` in its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"SNAKEPIT_RUN_ID={run_id}".encode() in environ


def _of_run(pid: int, run_id: str) -> bool:
    return _is_worker_of(pid, run_id) or _carries_run(pid, run_id)


def _kill_checked(pid: int, run_id: str, check: bool = True) -> bool:
    """SIGKILL ``pid`` if it (still) belongs to the run; through a pidfd, so never a reused pid."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return False
    try:
        if check and not _of_run(pid, run_id):
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _kill_run(run_id: str, workers: list[int]) -> list[int]:
    """Kill what is left of a dead run: its workers' trees, then whatever carries its id."""
    killed: list[int] = []
    for pid in workers:
        # Below a worker (checked just before): its tools' processes, any session.
        if not _is_worker_of(pid, run_id):
            continue
        # Below first: while the worker lives (stopped, say) nothing of its
        # tree is reaped, so no pid listed can be reused meanwhile.
        for child in descendants(pid):
            _kill_checked(child, run_id, check=False)
        if _kill_checked(pid, run_id):
            killed.append(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    me = os.getpid()
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != me and _carries_run(int(name), run_id):
                _kill_checked(int(name), run_id)
    return killed


def sweep(base: Path) -> list[int]:
    """Clean up every dead run under ``base``; return the pids of the workers killed."""
    killed: list[int] = []
    for lock in sorted(base.glob("*.lock")):
        run_id = lock.name.removesuffix(".lock")
        if not _RUN_ID.fullmatch(run_id):
            continue  # not a run's lock: the base may be shared with other files
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, OSError):
            continue  # cleaned up by somebody else just now, or a symlink
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run
            if not os.pread(fd, len(_MARKER), 0).startswith(_MARKER):
                continue  # a lock file of somebody else's
            run = base / run_id
            workers = []
            for pidfile in sorted(run.glob("*.pid")):
                try:
                    workers.append(int(pidfile.read_text()))
                except (OSError, ValueError):
                    continue
            killed += _kill_run(run_id, workers)
            shutil.rmtree(run, ignore_errors=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    if killed:
        logger.warning(
            "killed %d worker(s) left by a dead run under %s: %s", len(killed), base, killed
        )
    return killed


class RunDir:
    """One pool run's directory, locked while the run lives (see the module docstring)."""

    def __init__(self, base: Path, run_id: str, lock_fd: int) -> None:
        #: The base directory shared by runs.
        self.base = base
        #: This run's id (the workers get it with ``--run-id``).
        self.run_id = run_id
        #: This run's own directory: sockets and pid files.
        self.path = base / run_id
        #: The workers a sweep killed when this run claimed its directory.
        self.swept: list[int] = []
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, base: str | os.PathLike[str] | None, run_id: str) -> RunDir:
        """Sweep dead runs under ``base`` (default :func:`default_run_base`), then lock a new one.

        :raises ConfigError: ``base`` is not a private directory of this user,
            or too long for socket paths.
        """
        root = Path(base) if base is not None else default_run_base()
        root = root.absolute()
        longest = root / run_id / "w999999.sock.frames"
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            raise ConfigError(
                "run_dir",
                f"{root} is too long: worker socket paths like {longest} pass the "
                f"{MAX_SOCKET_PATH}-byte limit of unix sockets; use a shorter directory",
            )
        _private_dir(root)
        swept = sweep(root)
        # Locked before it gets its name, so a sweep never sees it unlocked.
        tmp = root / f".{run_id}.lock.new"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, _MARKER + f" {os.getpid()}\n".encode())
            tmp.rename(root / f"{run_id}.lock")
            (root / run_id).mkdir(mode=0o700)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        run = cls(root, run_id, fd)
        run.swept = swept
        return run

    def socket(self, worker_id: str) -> Path:
        """The socket path of a worker."""
        return self.path / f"{worker_id}.sock"

    def record(self, worker_id: str, pid: int) -> None:
        """Note a worker's pid, for the sweep after a crash of this host."""
        (self.path / f"{worker_id}.pid").write_text(f"{pid}\n")

    def close(self) -> None:
        """Remove this run's files and release its lock (its workers are stopped by then)."""
        if self._lock_fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        (self.base / f"{self.run_id}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None
