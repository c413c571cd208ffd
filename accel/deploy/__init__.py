"""Deployment: a package directory that deploys as it is (the compiled model, a Dockerfile,
Kubernetes manifests, a KServe InferenceService, a systemd unit), and local deployments
(the server as a background service on this machine, for edge boxes).

    from accel.deploy import make_package, PackageOptions, deploy_local, list_deployments
"""

from ..errors import AccelError


class DeployError(AccelError):
    """A package or a deployment could not be made, started or stopped."""


from .local import Deployment, deploy_local, list_deployments, undeploy  # noqa: E402
from .package import PackageOptions, make_package, remove_package  # noqa: E402

__all__ = ["DeployError", "PackageOptions", "make_package", "remove_package", "Deployment",
           "deploy_local", "list_deployments", "undeploy"]
