"""The generated TF Serving protos: committed files are what tools/gen-protos.sh gives, and they
live in accel's own descriptor pool, so they load beside TensorFlow's definitions of the same
names (tests/test_serving.py checks them field by field against the official stubs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "accel" / "serving" / "protos"


def test_regenerating_gives_the_committed_files(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run tools/gen-protos.sh")
    subprocess.run(["bash", str(ROOT / "tools" / "gen-protos.sh"), str(tmp_path)], check=True,
                   env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, timeout=120)
    generated = sorted(p.name for p in tmp_path.glob("*.py"))
    committed = sorted(p.name for p in PROTOS.glob("*_pb2*.py"))
    assert generated == committed
    for name in generated:
        assert (tmp_path / name).read_bytes() == (PROTOS / name).read_bytes(), name


def test_messages_use_accels_own_pool():
    from google.protobuf import descriptor_pool

    from accel.serving.protos import _pool, tf_serving_pb2, tf_tensor_pb2
    assert tf_serving_pb2.PredictRequest.DESCRIPTOR.file.pool is _pool.POOL
    assert tf_serving_pb2.PredictRequest.DESCRIPTOR.full_name == \
        "tensorflow.serving.PredictRequest"
    with pytest.raises(KeyError):  # nothing of ours in protobuf's default pool
        descriptor_pool.Default().FindFileByName(tf_tensor_pb2.DESCRIPTOR.name)


def test_round_trip_through_the_wire_format():
    import numpy as np

    from accel.serving.protos import tf_serving_pb2
    from accel.serving.tensors import from_tensor_proto, to_numpy, to_tensor_proto
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    response = tf_serving_pb2.PredictResponse()
    to_tensor_proto(array, response.outputs["y"])
    again = tf_serving_pb2.PredictResponse.FromString(response.SerializeToString())
    assert to_numpy(again.outputs["y"]).tobytes() == array.tobytes()
    raw = from_tensor_proto("x", again.outputs["y"])
    assert raw.array.tobytes() == array.tobytes() and raw.rows == 2
