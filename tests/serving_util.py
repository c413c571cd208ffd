"""Helpers of the serving tests: a tiny compiled classifier with its preprocessing, JPEGs, a
self-signed certificate, and the real server run as ``python -m accel serve`` on free ports."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "accel" / "data" / "photos"


def tiny_classifier(path: Path, *, batch: int = 1) -> Path:
    """A 32x32 conv classifier (10 classes, softmax) compiled with its preprocessing and labels;
    compiles in about a second."""
    from onnx import TensorProto, helper, numpy_helper

    import accel
    from accel.preprocess import PreprocessSpec
    rng = np.random.default_rng(0)
    weights = {"W": rng.normal(0, 0.2, (8, 3, 3, 3)), "B": rng.normal(0, 0.1, 8),
               "W2": rng.normal(0, 0.3, (10, 8)), "B2": rng.normal(0, 0.1, 10)}
    nodes = [helper.make_node("Conv", ["images", "W", "B"], ["c"], pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "B2"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                      [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    calibration = [rng.normal(0, 60, (batch, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    compiled = accel.compile(model, calibration=calibration, progress=False,
                             preprocessing=PreprocessSpec(height=32, width=32, resize_side=36),
                             labels=[f"class-{i}" for i in range(10)], task="classification")
    compiled.save(path)
    return path


def jpeg(seed: int = 0, size=(64, 48), quality: int = 90) -> bytes:
    from PIL import Image
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize(size, Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo_640x480() -> bytes:
    """A real photo as a 640x480 JPEG (the load benchmark's request)."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.open(PHOTOS / "rocket.jpg").convert("RGB").resize((640, 480), Image.BILINEAR) \
        .save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def expected_outputs(model_dir: Path, images: list[bytes]) -> dict[str, np.ndarray]:
    """The in-process answer: the artifact's own preprocessing, then CompiledModel.run."""
    import accel
    from accel.preprocess import preprocess, to_model_input
    compiled = accel.load(model_dir)
    rows = []
    for image in images:
        x = to_model_input(preprocess([image], compiled.preprocessing), compiled.preprocessing)
        rows.append(compiled.run(x))
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate, key) PEM files of a fresh self-signed certificate for ``host``."""
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
                    "-addext", f"subjectAltName=IP:{host},DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Server:
    """``python -m accel serve ARGS`` on free ports; ``stop()`` sends SIGTERM and returns the
    exit code. stderr (the JSON log) goes to a file, so a busy server never blocks on it."""

    def __init__(self, args, log_path: Path, *, ready: bool = True, timeout: float = 120,
                 env: dict | None = None):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "accel", "serve", *map(str, args), "--grpc-port", "0",
             "--rest-port", "0"], stdout=subprocess.PIPE, stderr=self._log, text=True,
            env={**os.environ, **(env or {})})
        try:
            self.info = self._first_line(timeout)
        except BaseException:
            self.kill()
            raise
        self.grpc_port, self.rest_port = self.info["grpc_port"], self.info["rest_port"]
        scheme = "https" if self.info["tls"] else "http"
        self.url = f"{scheme}://127.0.0.1:{self.rest_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        if ready:
            self.wait_ready(timeout)

    def _first_line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            readable, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if readable:
                return json.loads(self.proc.stdout.readline())
        raise TimeoutError("the server printed no ports")

    def wait_ready(self, timeout: float = 120, verify=False) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", verify=verify,
                             timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the server did not become ready")

    def log(self) -> list[dict]:
        """The JSON lines the server has logged so far (every line must be JSON)."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
