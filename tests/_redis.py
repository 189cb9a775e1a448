"""A real redis-server for the tests: on a unix socket in a private temp dir, never outliving us.

:func:`redis_server` starts Debian's ``redis-server`` (no persistence, no TCP
port) in a process group of its own, with ``PR_SET_PDEATHSIG`` so that a
SIGKILLed pytest does not leave it running, waits for its "Ready to accept
connections" line (read by a thread that drains its output: no polling), and
stops it on exit (SIGTERM, then SIGKILL) and removes the dir.

Where it cannot run (no ``redis-server``, or no ``redis`` package),
:func:`unavailable` skips the test with the reason, unless
``SNAKEPIT_REQUIRE_REDIS=1`` (``.ci/run`` sets it): then it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

#: Set to 1 where the Redis tests must run (CI): a missing Redis fails them instead.
REQUIRE_ENV = "SNAKEPIT_REQUIRE_REDIS"

#: Its log line once it listens (7.0: "The server is now ready to accept connections at PATH").
_READY = b"ready to accept connections"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it when ``SNAKEPIT_REQUIRE_REDIS=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: the Redis tests must run here)", pytrace=False)
    pytest.skip(f"Redis tests skipped: {reason}")


def redis_executable() -> str:
    """The path of ``redis-server`` and the redis package present, or :func:`unavailable`."""
    executable = shutil.which("redis-server")
    if executable is None:
        unavailable(
            "redis-server is not installed; `make test` installs Debian's redis-server "
            "package when it can (it needs root or sudo, and the network)"
        )
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        unavailable("the redis package is missing: pip install -e '.[test]' (or snakepit[redis])")
    return executable


@dataclass
class RedisServer:
    """A running redis-server: its unix socket, its process, the tail of its output."""

    socket: str
    process: subprocess.Popen[bytes]
    output: deque[bytes] = field(default_factory=lambda: deque(maxlen=40))

    @property
    def url(self) -> str:
        """Its ``unix://`` URL."""
        return f"unix://{self.socket}"

    def log(self) -> str:
        """The last lines it wrote."""
        return b"".join(self.output).decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM its process group, wait for it, SIGKILL it if it lingers; reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


#: The pids of the redis-servers this process runs now (session-scoped: not a test's leak).
SERVER_PIDS: set[int] = set()


@contextlib.contextmanager
def redis_server(timeout: float = 10.0) -> Iterator[RedisServer]:
    """Start a redis-server on a unix socket in a new 0700 temp dir; stop it and clean up on exit.

    :raises pytest.fail.Exception: it exited, or wrote no ready line within ``timeout``.
    """
    executable = redis_executable()
    directory = tempfile.mkdtemp(prefix="snakepit-redis-")  # 0700, a short path for the socket
    socket = os.path.join(directory, "redis.sock")
    # setpriv (util-linux) sets the parent-death signal and execs redis-server:
    # no preexec_fn (Python code in the child of a threaded process), and a
    # SIGKILLed test process takes its server with it.
    argv = [
        "setpriv", "--pdeathsig", "KILL",
        executable,
        "--port", "0",
        "--unixsocket", socket,
        "--unixsocketperm", "700",
        "--dir", directory,
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--loglevel", "notice",
        "--logfile", "",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    SERVER_PIDS.add(process.pid)
    server = RedisServer(socket, process)
    ready = threading.Event()
    started = threading.Event()

    def drain() -> None:  # until EOF (its exit), so that a full pipe never blocks it
        assert process.stdout is not None
        for line in process.stdout:
            server.output.append(line)
            if _READY in line.lower():
                started.set()
                ready.set()
        ready.set()  # EOF: it exited; the check below says so

    reader = threading.Thread(target=drain, name="redis-server output", daemon=True)
    reader.start()
    try:
        if not ready.wait(timeout) or not started.is_set():
            pytest.fail(f"redis-server did not start:\n{server.log()}", pytrace=False)
        yield server
    finally:
        server.stop()
        SERVER_PIDS.discard(process.pid)
        reader.join(5)
        assert process.stdout is not None
        process.stdout.close()
        shutil.rmtree(directory, ignore_errors=True)
