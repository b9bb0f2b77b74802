"""The local stand-ins for the images: this venv's builder and the tritonserver bundled with
nvidia-pytriton (python backend only), with the backend stub for this Python put in place.

Shared by the node agent and the serving tests, which start the same binary the same way.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from testenv.nodeagent import runtime

CHECKOUT = Path(__file__).resolve().parents[2]


def toolchain(state: Path) -> runtime.Toolchain:
    """The Toolchain, with a private copy of the bundle's backends (plus the stub) under `state`.

    The copy keeps site-packages untouched; the stub's RPATH assumes the bundle's own backends dir,
    so the bundle's shared libraries go on LD_LIBRARY_PATH instead (runtime.local_env).
    """
    import pytriton

    bundle = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    backends = state / "backends"
    if not backends.exists():
        shutil.copytree(bundle / "backends", backends)
        stub = bundle / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return runtime.Toolchain(
        venv_bin=Path(sys.executable).parent,
        triton_bin=bundle / "bin" / "tritonserver",
        backend_dir=backends,
        # this checkout's packages first (the images are built from it), then the venv's: a venv with an
        # editable install of another checkout would otherwise run that one's builder and gateway
        python_path=os.pathsep.join([str(CHECKOUT), sysconfig.get_paths()["purelib"]]),
        library_path=str(bundle.parent.parent / "nvidia_pytriton.libs"),
    )
