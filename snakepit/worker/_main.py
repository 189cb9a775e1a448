"""``python -m snakepit.worker``: load an adapter, serve it over gRPC, report ready."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from ._adapter import Adapter
from ._service import PROTOCOL_VERSION
from ._serving import (
    EXIT_SETUP,
    WorkerServer,
    WorkerStartupError,
    maybe_await,
    parse_listen,
)

__all__ = ("main", "run")

logger = logging.getLogger("snakepit.worker")

_PR_SET_PDEATHSIG = 1


def load_adapter(spec: str) -> type[Adapter]:
    """Import ``pkg.module:Class`` and check that it is an :class:`Adapter` subclass.

    :raises WorkerStartupError: naming what is wrong (format, module, class, type).
    """
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise WorkerStartupError(f"--adapter {spec!r}: expected 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise WorkerStartupError(
            f"--adapter {spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in class_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise WorkerStartupError(
                f"--adapter {spec!r}: module {module_name!r} has no attribute {class_name!r}"
            )
    if not (inspect.isclass(obj) and issubclass(obj, Adapter)):
        raise WorkerStartupError(
            f"--adapter {spec!r}: {class_name} is not a subclass of snakepit.worker.Adapter"
        )
    return obj


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m snakepit.worker",
        description="Serve a snakepit Adapter over gRPC; print one JSON ready line on stdout.",
    )
    parser.add_argument("--adapter", required=True, help="package.module:ClassName")
    parser.add_argument("--listen", required=True, help="unix:PATH or tcp:HOST:PORT (port 0 ok)")
    parser.add_argument("--worker-id", default="worker", help="reported in the ready line")
    parser.add_argument("--run-id", default="", help="the host's run id (orphan cleanup)")
    parser.add_argument("--max-concurrency", type=int, default=1, help="calls run at once")
    parser.add_argument("--bridge", default="", help="the host's bridge address (sessions)")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit if this pid goes away")
    parser.add_argument("--max-message-mb", type=float, default=64.0, help="gRPC message limit")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to finish on SIGTERM")
    parser.add_argument("--allow-pickle", action="store_true", help="accept pickle payloads")
    parser.add_argument("--no-stdin-watch", action="store_true", help="do not exit on EOF of stdin")
    parser.add_argument("--log-level", default="INFO")
    return parser


def watch_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Get ``signum`` when the parent process dies (Linux), or fail if it is gone already.

    :raises WorkerStartupError: the parent is not ``parent_pid`` any more.
    """
    # Checked once after prctl, for the race where the parent died before it took effect.
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            logger.warning("prctl(PR_SET_PDEATHSIG) unavailable; relying on stdin EOF")
    if parent_pid and os.getppid() != parent_pid:
        raise WorkerStartupError(f"parent process {parent_pid} is already gone")


async def serve(args: argparse.Namespace) -> int:
    """Load, set up and serve the adapter until SIGTERM or EOF on stdin; return the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason: list[str] = []

    parent = os.getppid()

    def request_stop(why: str) -> None:
        if why == "SIGTERM" and os.getppid() != parent:
            why = "parent died"  # PR_SET_PDEATHSIG: nobody is left to answer
        if not reason:
            reason.append(why)
        stop.set()

    for signum, why in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
        loop.add_signal_handler(signum, request_stop, why)
    loop.add_signal_handler(signal.SIGUSR1, _dump_state)
    if not args.no_stdin_watch:
        _watch_stdin(loop, request_stop)

    adapter_cls = load_adapter(args.adapter)
    parse_listen(args.listen)  # a bad address fails before setup() runs
    if args.max_concurrency < 1:
        raise WorkerStartupError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
    try:
        adapter = adapter_cls()
        await maybe_await(adapter.setup())
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        raise WorkerStartupError(
            f"--adapter {args.adapter!r}: setup() raised {type(exc).__name__}: {exc}", EXIT_SETUP
        ) from exc

    server = await WorkerServer.start(
        adapter,
        listen=args.listen,
        adapter_path=args.adapter,
        worker_id=args.worker_id,
        max_concurrency=args.max_concurrency,
        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
        allow_pickle=args.allow_pickle,
    )
    _report_ready(args, server.address, server.frames_address, sorted(adapter_cls.tools))

    await stop.wait()
    why = reason[0] if reason else "stop"
    grace = 0.0 if why in ("stdin closed", "parent died") else args.grace
    logger.info("stopping (%s); finishing calls in flight for up to %gs", why, grace)
    await server.stop(grace)
    try:
        await asyncio.wait_for(maybe_await(adapter.teardown()), max(grace, 1.0))
    except Exception:
        logger.exception("teardown() failed")
        return 1
    return 0


def _dump_state() -> None:
    """On SIGUSR1: write every asyncio task's and thread's stack to stderr (diagnostics)."""
    import faulthandler

    print("snakepit.worker: SIGUSR1 state dump", file=sys.stderr)
    for task in asyncio.all_tasks():
        print(f"task {task.get_name()}: {task!r}", file=sys.stderr)
        for frame in task.get_stack():
            code = frame.f_code
            print(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}", file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def _report_ready(
    args: argparse.Namespace, address: str, frames: str | None, tools: list[str]
) -> None:
    line = json.dumps(
        {
            "event": "ready",
            "address": address,
            "frames": frames,
            "pid": os.getpid(),
            "worker_id": args.worker_id,
            "run_id": args.run_id,
            "protocol_version": PROTOCOL_VERSION,
            "tools": tools,
        }
    )
    os.write(1, (line + "\n").encode())
    # From now on stdout is the tools' to print on: send it to stderr, so a
    # host that stops reading the ready pipe never blocks a chatty tool.
    os.dup2(2, 1)


def _watch_stdin(loop: asyncio.AbstractEventLoop, request_stop: Any) -> None:
    def wait_for_eof() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        loop.call_soon_threadsafe(request_stop, "stdin closed")

    threading.Thread(target=wait_for_eof, name="snakepit-stdin-watch", daemon=True).start()


def run(argv: Sequence[str] | None = None) -> None:
    """Run the worker process and exit it, without waiting for stuck tool threads.

    A sync tool that never returns cannot be interrupted; once the grace
    period is over the process leaves anyway (``os._exit``) instead of
    joining that thread, so a worker whose host is gone never lingers.
    """
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker until it stops; return its exit code (see :func:`run`)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{args.worker_id}] %(name)s: %(message)s",
    )
    try:
        watch_parent(args.parent_pid)
        return asyncio.run(serve(args))
    except WorkerStartupError as exc:
        print(f"snakepit.worker: {exc}", file=sys.stderr, flush=True)
        return exc.code
