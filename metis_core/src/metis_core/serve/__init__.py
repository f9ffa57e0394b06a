"""Serving a policy to a robot: ``metis serve``, its protocol, a client.

* :mod:`metis_core.serve.wire` — the json-numpy codec (numpy and the stdlib only);
* :mod:`metis_core.serve.service` — request validation, inference behind a lock, sessions,
  joint commands, metrics (no web framework);
* :mod:`metis_core.serve.app` — the FastAPI app (``pip install 'metis-core[serve]'``);
* :mod:`metis_core.serve.client` — :class:`PolicyClient` (stdlib only).
"""

from __future__ import annotations

from metis_core.serve.client import PolicyClient, PolicyServerError
from metis_core.serve.service import PolicyService, RequestError, ServerConfig

__all__ = ["PolicyClient", "PolicyServerError", "PolicyService", "RequestError", "ServerConfig"]


def create_app(*args, **kwargs):
    """:func:`metis_core.serve.app.create_app` (imports FastAPI only when called)."""
    from metis_core.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
