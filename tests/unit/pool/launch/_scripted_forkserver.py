"""A fork server that speaks the protocol, forks one stand-in worker, then misbehaves as told.

Run by a test as the ``python`` of :meth:`ForkServerClient.start` (through a
wrapper: ``argv`` is ``-m snakepit.worker._forkserver --control-fd N ...``);
``SNAKEPIT_TEST_FORKSERVER`` in its environment says how it misbehaves:

- ``bad-exit``: the worker's exit report has a ``code`` that is no number;
- ``file-pidfd``: what comes as the worker's pidfd is a regular file's fd
  (the host's watcher of it cannot watch it).

The stand-in worker waits for a signal, in the server's process group: both
go when the host kills that group.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from snakepit._wire import _forkserver_protocol as protocol


def main() -> None:
    mode = os.environ["SNAKEPIT_TEST_FORKSERVER"]
    control = socket.socket(fileno=int(sys.argv[sys.argv.index("--control-fd") + 1]))
    protocol.send(control, protocol.encode({"op": protocol.READY, "pid": os.getpid()}))
    received = protocol.receive(control, protocol.MAX_REQUEST, 4)  # a blocking socket
    assert received is not None
    data, fds = received
    protocol.close_fds(fds)
    rid = protocol.decode(data)["id"]
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    pidfd = os.pidfd_open(pid) if mode == "bad-exit" else os.open(__file__, os.O_RDONLY)
    spawned = {"op": protocol.SPAWNED, "id": rid, "pid": pid}
    protocol.send(control, protocol.encode(spawned), [pidfd])
    os.close(pidfd)
    if mode == "bad-exit":
        protocol.send(control, protocol.encode({"op": protocol.EXIT, "pid": pid, "code": "x"}))
    protocol.receive(control, protocol.MAX_REQUEST, 4)  # until the host is done with us
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
