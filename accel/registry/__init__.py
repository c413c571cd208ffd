"""The model registry: versioned, tagged compiled models on local disk (SQLite + blobs).

    from accel.registry import Registry
    reg = Registry()                                   # $ACCEL_HOME or ~/.local/share/accel
    mv = reg.register("resnet50.accel", "resnet50", source="resnet50.onnx", tags=["prod"])
    path = reg.resolve("resnet50:1")                   # a verified directory for accel.load
"""

from .errors import (CorruptBlobError, DestinationExistsError, InvalidReferenceError,
                     ModelNotFoundError, ReferencedError, RegistryError)
from .store import (GcReport, ModelVersion, Reference, Registry, check_artifact, default_home,
                    parse_ref)

__all__ = [
    "Registry", "ModelVersion", "Reference", "GcReport", "default_home", "parse_ref",
    "check_artifact", "RegistryError", "ModelNotFoundError", "InvalidReferenceError",
    "ReferencedError", "CorruptBlobError", "DestinationExistsError",
]
