"""One served model: its compiled artifact, its request queue and the thread that keeps its
device busy.

Requests are split into chunks of the compiled batch size; chunks queue here (the queue is
bounded by the server's admission count, see ``server.Core``) and one device thread runs them
back to back, gathering several small chunks into one device batch when the model was compiled
for a batch above one. Decoding and preprocessing happen before a chunk is queued, in the
server's worker pool, so the device never waits for them.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ServingError, Status, invalid
from .tensors import RawInput

log = logging.getLogger("accel.serving")

# Names the seed's clients send for the image input (COMPAT.md), besides the model's own.
INPUT_ALIASES = ("images", "Placeholder:0", "Placeholder")
OUTPUT_ALIAS = "output_alias"  # the seed's alias of a single classifier output
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def default_name(path: Path) -> str:
    """A model's name when --name is not given: its artifact directory's name, less suffix."""
    name = path.name.split(".")[0] if not path.name.startswith(".") else path.name
    return re.sub(r"[^A-Za-z0-9._-]", "-", name) or "model"


@dataclass
class Job:
    """One chunk of rows for one device run, and the future its caller waits on."""
    x: np.ndarray                       # float32, model layout, rows <= batch size
    deadline: float | None              # time.monotonic() by which it must have started
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class Result:
    outputs: dict[str, np.ndarray]     # this job's rows only
    queue_s: float
    device_s: float


class ServedModel:
    """A compiled model behind a queue; ``load()`` binds it to the device (slow), then
    ``submit()`` queues inputs and returns futures of their outputs."""

    LOADING, AVAILABLE, STOPPED = "LOADING", "AVAILABLE", "END"

    def __init__(self, name: str, path: Path, *, device=None, version: int = 1,
                 max_pixels: int | None = None, max_images: int = 64, metrics=None,
                 simulate_device_s: float = 0.0):
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' or '-' "
                             "(at most 128, starting with a letter or digit)")
        self.name, self.path, self.version = name, Path(path), int(version)
        self.device_selector = device
        self.max_pixels, self.max_images = max_pixels, int(max_images)
        self.metrics = metrics
        self.state = self.LOADING
        self.compiled = None
        self.spec = None          # PreprocessSpec; None: the artifact says nothing (tensors only)
        self.labels: list[str] | None = None
        self.task: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._simulate_device_s = float(simulate_device_s)  # tests: a slow device

    # --- loading --------------------------------------------------------------------------
    def load(self) -> None:
        """Bind the artifact to its device, run it once (builds and warms the kernels) and
        start the device thread."""
        from ..backend.compiled import load as load_compiled  # no compiler import
        compiled = load_compiled(self.path, self.device_selector)
        if len(compiled.inputs) != 1:
            raise ValueError(f"model {self.name!r} has {len(compiled.inputs)} inputs; the "
                             "server serves single-input image models")
        self.compiled = compiled
        self.spec = getattr(compiled, "preprocessing", None)
        self.labels = getattr(compiled, "labels", None)
        self.task = getattr(compiled, "task", None)
        self.input = compiled.inputs[0]
        self.batch_size = int(self.input.shape[0])
        self.outputs = [o.name for o in compiled.outputs]
        compiled.run(np.zeros(self.input.shape, np.float32))  # warm-up
        self._thread = threading.Thread(target=self._device_loop, name=f"device:{self.name}",
                                        daemon=True)
        self._thread.start()
        self.state = self.AVAILABLE
        log.info(json.dumps({"event": "model_loaded", "model": self.name,
                             "path": str(self.path), "device": compiled.device.short_name,
                             "batch": self.batch_size}))

    def stop(self) -> None:
        """Finish what is queued, then end the device thread."""
        self.state = self.STOPPED
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # --- describing -----------------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:
        return (self.input.name,) + tuple(a for a in INPUT_ALIASES if a != self.input.name)

    @property
    def output_keys(self) -> dict[str, str]:
        """Response key -> output tensor name: every output, plus ``output_alias`` for a
        single output."""
        keys = {name: name for name in self.outputs}
        if len(self.outputs) == 1:
            keys[OUTPUT_ALIAS] = self.outputs[0]
        return keys

    def output_shape(self, name: str) -> tuple[int, ...]:
        return next(tuple(o.shape) for o in self.compiled.outputs if o.name == name)

    def select_outputs(self, wanted) -> dict[str, str]:
        """The response keys of an output filter (all outputs when empty)."""
        keys = self.output_keys
        if not wanted:
            return keys
        unknown = [w for w in wanted if w not in keys]
        if unknown:
            raise invalid(f"unknown output(s) {unknown} of model {self.name!r}; its outputs "
                          f"are {list(keys)}")
        return {w: keys[w] for w in dict.fromkeys(wanted)}

    def info(self) -> dict:
        """The artifact's self-description, for metadata answers."""
        return {"task": self.task or "", "labels": list(self.labels or []),
                "preprocessing": None if self.spec is None else self.spec.to_dict(),
                "batch_size": self.batch_size}

    # --- requests -------------------------------------------------------------------------
    def check_input(self, inputs: dict[str, RawInput]) -> RawInput:
        """The one image input of a request, by any of the names it answers to."""
        if not inputs:
            raise invalid(f"the request has no inputs; model {self.name!r} takes one, named "
                          f"any of {list(self.input_names)}")
        if len(inputs) > 1:
            raise invalid(f"the request has inputs {sorted(inputs)}; model {self.name!r} "
                          f"takes one, named any of {list(self.input_names)}")
        (name, raw), = inputs.items()
        if name not in self.input_names:
            raise invalid(f"unknown input {name!r} of model {self.name!r}; it takes one of "
                          f"{list(self.input_names)}")
        if raw.images is not None:
            if self.spec is None:
                raise invalid(f"model {self.name!r} records no preprocessing, so it cannot "
                              f"take encoded images: send a float32 tensor of shape "
                              f"{list(self.input.shape)}")
            if len(raw.images) > self.max_images:
                raise invalid(f"input {name!r} holds {len(raw.images)} images; at most "
                              f"{self.max_images} per request")
            if any(not image for image in raw.images):
                raise invalid(f"input {name!r} holds an empty image")
        else:
            want = tuple(self.input.shape[1:])
            shape = tuple(raw.array.shape)
            if shape[1:] != want or shape[0] < 1:
                raise invalid(f"input {name!r} has shape {list(shape)}; model {self.name!r} "
                              f"takes [n, {', '.join(map(str, want))}] (n >= 1)")
            if shape[0] > self.max_images:
                raise invalid(f"input {name!r} holds {shape[0]} rows; at most "
                              f"{self.max_images} per request")
            if not np.all(np.isfinite(raw.array)):
                raise invalid(f"input {name!r} holds NaN or infinite values")
        return raw

    def prepare(self, raw: RawInput) -> np.ndarray:
        """Decode and preprocess (worker pool): float32 rows in the model's input layout."""
        if raw.array is not None:
            return raw.array
        from ..preprocess import preprocess, to_model_input
        try:
            batch = preprocess(raw.images, self.spec, max_pixels=self.max_pixels)
        except ValueError as error:  # ImageError is a ValueError: undecodable, too large
            raise invalid(f"input {raw.name!r}: {error}") from None
        return np.ascontiguousarray(to_model_input(batch, self.spec), dtype=np.float32)

    def submit(self, x: np.ndarray, deadline: float | None) -> list[Job]:
        """Queue ``x`` ([n, ...] rows) in chunks of the batch size."""
        if self.state != self.AVAILABLE:
            raise ServingError(Status.UNAVAILABLE, f"model {self.name!r} is not available "
                               f"({self.state.lower()})")
        jobs = [Job(x[i:i + self.batch_size], deadline)
                for i in range(0, x.shape[0], self.batch_size)]
        for job in jobs:
            self._queue.put(job)
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).inc(len(jobs))
        return jobs

    # --- the device thread ----------------------------------------------------------------
    def _take(self, carry: Job | None) -> tuple[list[Job], Job | None, bool]:
        """The next device batch: queued jobs whose rows fit in one run. Returns (jobs,
        a job left for the next batch, whether the stop marker was seen)."""
        first = carry if carry is not None else self._queue.get()
        if first is None:
            return [], None, True
        jobs, rows = [first], first.x.shape[0]
        while rows < self.batch_size:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return jobs, None, True
            if rows + nxt.x.shape[0] > self.batch_size:
                return jobs, nxt, False
            jobs.append(nxt)
            rows += nxt.x.shape[0]
        return jobs, None, False

    def _device_loop(self) -> None:
        carry = None
        while True:
            jobs, carry, stop = self._take(carry)
            if jobs:
                self._run(jobs)
            if stop:
                while True:  # anything queued in a race with stop() still gets its answer
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        return
                    if job is not None:
                        self._run([job])

    def _run(self, jobs: list[Job]) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).dec(len(jobs))
        start = time.monotonic()
        live = []
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue  # the caller gave up (its deadline or connection ended)
            if job.deadline is not None and start > job.deadline:
                job.future.set_exception(ServingError(
                    Status.DEADLINE_EXCEEDED, f"the deadline passed while the request waited "
                    f"{start - job.enqueued:.3f} s for the device of model {self.name!r}"))
                continue
            live.append(job)
        if not live:
            return
        rows = [job.x.shape[0] for job in live]
        x = live[0].x if len(live) == 1 else np.concatenate([job.x for job in live])
        if x.shape[0] < self.batch_size:  # pad to the compiled batch
            pad = np.zeros((self.batch_size - x.shape[0],) + x.shape[1:], np.float32)
            x = np.concatenate([x, pad])
        try:
            if self._simulate_device_s:
                time.sleep(self._simulate_device_s)
            outputs = self.compiled.run(x)
        except Exception as error:  # noqa: BLE001 - every failure becomes a status code
            status = Status.INVALID_ARGUMENT if isinstance(error, (ValueError, TypeError)) \
                else Status.INTERNAL
            err = ServingError(status, f"model {self.name!r}: {error}")
            for job in live:
                job.future.set_exception(err)
            if status is Status.INTERNAL:
                log.error(json.dumps({"event": "device_error", "model": self.name,
                                      "error": str(error)}))
            return
        device_s = time.monotonic() - start
        if self.metrics is not None:
            self.metrics.device.labels(self.name).observe(device_s)
        offset = 0
        for job, n in zip(live, rows):
            part = {k: v[offset:offset + n] for k, v in outputs.items()}
            offset += n
            job.future.set_result(Result(part, start - job.enqueued, device_s))
