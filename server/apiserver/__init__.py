"""The HTTP API server: Llama Deploy's paths and shapes plus ours, over several deployments.

* :func:`create_app` builds the Starlette app of docs/http-api.md over a DeploymentManager.
* :func:`create_control_plane_app` serves one deployment's control plane with Llama Deploy 0.8's
  control-plane routes (on the deployment file's ``control-plane.port``).
* :func:`serve` is what ``llamactl serve`` runs.
"""

from llamactl.server.apiserver.app import create_app
from llamactl.server.apiserver.control_plane_app import create_control_plane_app
from llamactl.server.apiserver.runner import serve

__all__ = ["create_app", "create_control_plane_app", "serve"]
