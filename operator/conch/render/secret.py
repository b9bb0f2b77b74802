"""The Triton admin-key Secret: the key that unlocks Triton's restricted APIs for one ModelDeployment.

Triton runs with its model-repository, shared-memory, logging and trace APIs restricted
(`--http-restricted-api` / `--grpc-restricted-protocol`): an HTTP request to them must carry the
header ADMIN_HEADER with this key, a gRPC call the metadata GRPC_ADMIN_HEADER. The key is random,
generated once by the controller and read back from the live Secret on every later pass, so the
rendered Secret (a pure function of owner and key) is stable and an idle pass writes nothing.
"""

from __future__ import annotations

import base64
import secrets

from conch.render import common
from conch.render.common import Obj, Owner

DATA_KEY = "admin-key"
ADMIN_HEADER = "conch-admin-key"
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"  # the metadata key Triton's gRPC checks
RESTRICTED_APIS = "model-repository,shared-memory,logging,trace"
NAME_SUFFIX = "-triton-admin"


def name(owner: Owner) -> str:
    """The Secret's name."""
    return f"{owner.name}{NAME_SUFFIX}"


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe: it travels in an HTTP header and a command-line flag)."""
    return secrets.token_urlsafe(32)


def key_of(live: Obj | None, data_key: str = DATA_KEY) -> str | None:
    """The value under `data_key` of a live Secret (the admin key by default; authproxy's generated
    token too), or None when there is none (or it is unreadable)."""
    value = ((live or {}).get("data") or {}).get(data_key)
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).decode()
    except ValueError:
        return None


def render_secret(owner: Owner, key: str) -> Obj:
    """The Secret holding `key`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": common.metadata(owner, name(owner), "triton"),
        "type": "Opaque",
        "data": {DATA_KEY: base64.b64encode(key.encode()).decode()},
    }


def hardening_args(key: str) -> list[str]:
    """tritonserver flags of its deployment guide: no model control, restricted admin APIs behind `key`."""
    return [
        "--model-control-mode=none",
        f"--http-restricted-api={RESTRICTED_APIS}:{ADMIN_HEADER}={key}",
        f"--grpc-restricted-protocol={RESTRICTED_APIS}:{ADMIN_HEADER}={key}",
    ]
