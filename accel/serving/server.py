"""The server process: gRPC (grpc.aio) and REST (uvicorn) on one asyncio loop in front of one
``Core``.

Start-up binds both ports first and prints them on one JSON line on stdout (port 0 picks a free
port), then loads the models; health says NOT_SERVING / 503 until every model is loaded. On
SIGTERM (or SIGINT) the server stops admitting work (UNAVAILABLE / 503), lets what is in
flight finish (up to ``drain_timeout``), closes both listeners and returns normally, so the
process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn

from .budget import Budget
from .core import Core
from .grpc_limits import SizeLimit, hard_cap
from .grpc_service import add_services, set_health
from .metrics import Metrics
from .models import ServedModel
from .rest import create_app

log = logging.getLogger("accel.serving")


@dataclass
class ServeConfig:
    models: list[tuple[str, Path, int]]          # (name, artifact directory, version)
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    rest_port: int = 8501
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_keys: tuple[str, ...] = ()
    device: str | None = None
    max_queue: int = 64                          # requests in flight per model
    max_request_bytes: int = 32 << 20            # gRPC and REST; see grpc_limits.hard_cap
    max_inflight_bytes: int | None = None        # request bytes held at once; None: 4x the above
    inflight_wait: float = 10.0                  # seconds a request waits for that budget
    max_pixels: int | None = None                # per image; None: accel.preprocess's limit
    max_images: int = 64                         # per request
    workers: int = 0                             # decode/preprocess threads; 0: one per core
    drain_timeout: float = 30.0
    access_log: bool = True
    load_delay: float = 0.0                      # tests: time to stay in the loading state
    simulate_device_ms: float = 0.0              # tests: a slower device


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the server drains first, then stops it."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as error:
        raise OSError(f"cannot listen for REST on {_address(host, port)}: "
                      f"{error.strerror or error}") from None


def configure_logging(access_log: bool) -> None:
    """JSON lines on stderr: the server's events and access log as they are, other libraries'
    warnings wrapped into JSON."""
    class Formatter(logging.Formatter):
        def format(self, record):
            message = record.getMessage()
            if message.startswith("{"):
                return message
            return json.dumps({"ts": round(record.created, 6), "event": "log",
                               "level": record.levelname.lower(), "logger": record.name,
                               "message": message})
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter())
    for name, level in (("accel.serving", logging.INFO), ("uvicorn", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("accel.serving.access").disabled = not access_log


async def serve(config: ServeConfig, *, announce=None) -> bool:
    """Run until SIGTERM/SIGINT. Raises if a model fails to load (after shutting down).
    Returns False when a model was still loading at the end (its thread is inside the device
    runtime, which must not be torn down under it: the caller exits without finalizers)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # set by SIGTERM/SIGINT, from the first moment on
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics()
    models = [ServedModel(name, path, device=config.device, version=version,
                          max_pixels=config.max_pixels, max_images=config.max_images,
                          metrics=metrics, simulate_device_s=config.simulate_device_ms / 1e3)
              for name, path, version in config.models]
    workers = config.workers or min(8, max(2, os.cpu_count() or 2))
    budget = Budget(inflight_budget(config), wait=config.inflight_wait, metrics=metrics,
                    on_idle=malloc_trim())
    core = Core(models, auth_keys=config.auth_keys, max_queue=config.max_queue,
                workers=workers, metrics=metrics, access_log=config.access_log)

    tls = None
    if config.tls_cert or config.tls_key:
        if not (config.tls_cert and config.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        tls = (Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())

    # core refuses only over a hard cap (uncounted); SizeLimit refuses over the configured
    # limit, counted and logged (see grpc_limits)
    options = [("grpc.max_receive_message_length", hard_cap(config.max_request_bytes)),
               ("grpc.max_send_message_length", -1),
               ("grpc.so_reuseport", 0)]  # port taken => an error, not a silent second server
    grpc_server = grpc.aio.server(options=options,
                                  interceptors=[SizeLimit(core, config.max_request_bytes,
                                                          budget)])
    health = add_services(grpc_server, core)
    address = _address(config.host, config.grpc_port)
    try:
        if tls:
            grpc_port = grpc_server.add_secure_port(address,
                                                    grpc.ssl_server_credentials([tls]))
        else:
            grpc_port = grpc_server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {address}: {error}") from None
    if not grpc_port:
        raise OSError(f"cannot listen for gRPC on {address}")
    rest_socket = _listen(config.host, config.rest_port)
    rest_port = rest_socket.getsockname()[1]

    app = create_app(core, max_request_bytes=config.max_request_bytes, budget=budget)
    uv = _Uvicorn(uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", ws="none",
        ssl_certfile=str(config.tls_cert) if tls else None,
        ssl_keyfile=str(config.tls_key) if tls else None,
        timeout_graceful_shutdown=5, server_header=False))

    await grpc_server.start()
    await set_health(health, False)
    rest_task = asyncio.create_task(uv.serve(sockets=[rest_socket]))
    while not uv.started and not rest_task.done():
        await asyncio.sleep(0.01)
    if rest_task.done():
        await grpc_server.stop(None)
        rest_task.result()
        raise RuntimeError("the REST server did not start")

    line = {"event": "listening", "host": config.host, "grpc_port": grpc_port,
            "rest_port": rest_port, "tls": bool(tls), "auth": core.auth_enabled,
            "models": [m.name for m in models], "pid": os.getpid()}
    (announce or _print)(line)

    failure: list[BaseException] = []
    loaders: list[threading.Thread] = []

    async def load_all():
        if config.load_delay:
            await asyncio.sleep(config.load_delay)
        for model in models:
            done: Future = Future()

            def work(model=model, done=done):
                if not done.set_running_or_notify_cancel():
                    return  # shut down before it began
                try:
                    model.load()
                    done.set_result(None)
                except BaseException as error:  # noqa: BLE001 - reported below
                    done.set_exception(error)
            # a daemon thread: a SIGTERM during a long load need not wait for it
            loaders.append(threading.Thread(target=work, name=f"load:{model.name}",
                                            daemon=True))
            loaders[-1].start()
            try:
                await asyncio.wrap_future(done)
            except Exception as error:  # noqa: BLE001
                failure.append(error)
                log.error(json.dumps({"event": "load_failed", "model": model.name,
                                      "error": str(error)}))
                stop.set()
                return
        await set_health(health, True)
        log.info(json.dumps({"event": "ready", "models": [m.name for m in models]}))

    loader = asyncio.create_task(load_all())
    await stop.wait()

    # --- graceful shutdown -----------------------------------------------------------------
    started = time.monotonic()
    log.info(json.dumps({"event": "draining", "in_flight": sum(core.in_flight.values())}))
    loader.cancel()
    await health.enter_graceful_shutdown()
    drained = await core.drain(config.drain_timeout)
    # Answers already computed may still be on their way out (a loaded host can hold a handler
    # past a second): the grace ends as soon as no call is open, so a long one costs nothing.
    await grpc_server.stop(grace=max(1.0, config.drain_timeout - (time.monotonic() - started)))
    uv.should_exit = True
    with contextlib.suppress(Exception):
        await rest_task
    for thread in loaders:  # a load under way ends first (bounded by the drain timeout)
        await loop.run_in_executor(None, thread.join, config.drain_timeout)
    loading = any(thread.is_alive() for thread in loaders)
    for model in models:
        await loop.run_in_executor(None, model.stop)
    core.pool.shutdown(wait=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    log.info(json.dumps({"event": "stopped", "drained": drained, "still_loading": loading,
                         "seconds": round(time.monotonic() - started, 3)}))
    if failure:
        raise failure[0]
    return not loading


def _print(line: dict) -> None:
    print(json.dumps(line), flush=True)


def inflight_budget(config: ServeConfig) -> int:
    """The in-flight bytes budget: as configured (at least one request of the size limit),
    else 4x the request size limit."""
    if config.max_inflight_bytes is None:
        return 4 * config.max_request_bytes
    if config.max_inflight_bytes < config.max_request_bytes:
        raise ValueError(f"the in-flight budget ({config.max_inflight_bytes} bytes) is smaller "
                         f"than the request size limit ({config.max_request_bytes} bytes): "
                         "raise --max-inflight-mb or lower --max-request-mb")
    return config.max_inflight_bytes


MMAP_THRESHOLD = 1 << 20


def return_large_blocks_to_the_system() -> bool:
    """glibc only: serve allocations of 1 MiB and more (request bodies, decoded images) from
    their own mappings, given back to the system when freed. glibc's default threshold rises
    to the largest block freed so far (up to 32 MiB), so after one large request the next
    ones come from the heap, which keeps the pages: RSS then stays near its peak and creeps
    up with fragmentation. $MALLOC_MMAP_THRESHOLD_, when set, wins."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def malloc_trim():
    """glibc's ``malloc_trim(0)`` (None elsewhere): hands the free pages inside the heaps back
    to the system. gRPC core receives a message in many small blocks spread over its threads'
    heaps; once freed, most of them stay resident without it (measured: 4 x 100 MiB refused
    requests left RSS 460 MiB above idle; with it, back to idle)."""
    try:
        import ctypes
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return lambda: trim(0)


def run(config: ServeConfig) -> None:
    """Serve until SIGTERM/SIGINT (the ``accel serve`` command)."""
    configure_logging(config.access_log)
    return_large_blocks_to_the_system()
    if not asyncio.run(serve(config)):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # a model load is still inside the device runtime: skip finalizers
