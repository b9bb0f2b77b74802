"""Static checks of the images' Dockerfiles, hack/images.sh and kind-config.yaml against the chart and the
operator (tests/images builds and runs the images themselves)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .helmrun import CHART, ROOT

pytestmark = pytest.mark.unit

IMAGES = ROOT / "images"


def _final_stage(dockerfile: str) -> str:
    return (IMAGES / dockerfile).read_text().rsplit("\nFROM ", 1)[1]


def test_operator_image_runs_as_the_chart_user_without_torch() -> None:
    text = (IMAGES / "operator.Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    deps_stage = text.split("FROM")[1]
    assert "pyproject_deps.py /src/pyproject.toml operator >" in deps_stage and "builder" not in deps_stage
    assert '! /opt/conch/bin/python -c "import torch"' in text
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    assert uid == 65532
    assert re.search(rf"^USER {uid}:{uid}$", _final_stage("operator.Dockerfile"), re.M)
    assert '"conch-operator"' in text


def test_builder_image_is_non_root() -> None:
    text = (IMAGES / "builder.Dockerfile").read_text()
    assert "pyproject_deps.py /src/pyproject.toml builder >" in text
    user = re.search(r"^USER (\d+):(\d+)$", _final_stage("builder.Dockerfile"), re.M)
    assert user is not None and int(user.group(1)) != 0


def test_kind_config_has_a_gpu_worker() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker"]
    assert config["nodes"][1]["labels"]["nvidia.com/gpu.present"] == "true"


# Modules a python step may import without installing them: the backend's own, and the steps' siblings.
PROVIDED = {
    "triton_python_backend_utils",
    *(p.stem for p in (ROOT / "model_repo_builder/triton/python_backend").glob("*.py")),
}


def _step_imports() -> set[str]:
    """Top-level third-party modules imported anywhere (lazily too) by the python steps."""
    found: set[str] = set()
    for path in (ROOT / "model_repo_builder" / "triton" / "python_backend").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in PROVIDED}


PIN = re.compile(r'"([A-Za-z0-9_.-]+)(\[[A-Za-z0-9_,.-]+\])?==([0-9][0-9A-Za-z.]*)"')


MODULE_OF = {"grpcio": "grpc"}
"""Pinned distributions whose module is named otherwise."""


def _triton_pins() -> dict[str, str]:
    text = (IMAGES / "triton.Dockerfile").read_text()
    # as the modules are imported (a distribution's module has its name unless MODULE_OF says otherwise)
    return {MODULE_OF.get(name, name.replace("-", "_")): version for name, _, version in PIN.findall(text)}


def test_triton_image_installs_what_the_python_steps_import() -> None:
    imports = _step_imports()
    assert {"numpy", "tokenizers", "onnxruntime"} <= imports, "the scan must see the known imports"
    pins = _triton_pins()
    missing = imports - set(pins)
    assert not missing, f"images/triton.Dockerfile does not install {sorted(missing)}"
    assert int(pins["numpy"].split(".")[0]) < 2, "the python steps and the builder use numpy 1.x"


def test_triton_image_installs_what_the_gateway_imports() -> None:
    """The gateway (conch-gateway) runs in the Triton image: every third-party module conch_gateway
    imports is pinned there, and its pins agree with pyproject's `gateway` extra and core."""
    imports = _imports(ROOT / "conch_gateway") - {"conch_gateway"}
    assert {"starlette", "uvicorn", "pydantic", "tritonclient", "numpy"} <= imports, "the scan must see them"
    pins = _triton_pins()
    missing = imports - set(pins)
    assert not missing, f"images/triton.Dockerfile does not install {sorted(missing)} for conch_gateway"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["gateway"]]
    for req in wanted:
        module = canonicalize_name(req.name).replace("-", "_")
        if module in imports:
            assert req.specifier.contains(pins[module]), f"{module}=={pins[module]} is not {req}"
    text = (IMAGES / "triton.Dockerfile").read_text()
    assert '"tritonclient[grpc]==' in text, "the gateway's client is the gRPC one"
    assert "COPY conch_gateway /opt/conch/conch_gateway" in text
    assert "conch-gateway --help" in text, "the smoke check runs the console script"
    scripts = project["scripts"]
    assert scripts["conch-gateway"] == "conch_gateway.__main__:main"
    assert "from conch_gateway.__main__ import main" in text, "the image's launcher runs the same entry point"


def test_triton_image_carries_the_builders_repository_check() -> None:
    """The serving pods' init container runs `conch-verify` from the Triton image: the builder's own
    store/verify.py copied alone (it must import nothing but the standard library), launched through
    the same entry point pyproject names, and run by the build's smoke check."""
    text = (IMAGES / "triton.Dockerfile").read_text()
    assert "COPY model_repo_builder/store/verify.py /opt/conch/conch_verify.py" in text
    assert "from conch_verify import main" in text and "conch-verify --help" in text
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["conch-verify"] == "model_repo_builder.store.verify:main"
    tree = ast.parse((ROOT / "model_repo_builder" / "store" / "verify.py").read_text())
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not [n for n in nodes if isinstance(n, ast.ImportFrom) and n.level], "no package-relative import"
    names = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
    assert {m.split(".")[0] for m in names} <= set(sys.stdlib_module_names), names


def test_images_sh_downloads_every_pin_of_the_triton_image() -> None:
    """The Triton image's wheel set is the Dockerfile's pins, all of them, as written there."""
    listed = subprocess.run(
        ["bash", str(ROOT / "hack" / "images.sh"), "pins"], capture_output=True, text=True, check=True
    ).stdout.split()
    text = (IMAGES / "triton.Dockerfile").read_text()
    written = [f"{name}{extra}=={version}" for name, extra, version in PIN.findall(text)]
    assert listed == written and any(p.startswith("tritonclient[grpc]==") for p in listed), listed


def test_triton_image_is_the_default_and_runs_as_the_serving_user() -> None:
    from conch.api import types
    from conch.render import common

    text = (IMAGES / "triton.Dockerfile").read_text()
    base = re.search(r"^ARG TRITON_IMAGE=(nvcr\.io/nvidia/tritonserver:(\S+))$", text, re.M)
    # NGC 25.12: Ubuntu 24.04, python 3.12 (24.10's 3.10 has no onnxruntime 1.32 / genai 0.18 wheels)
    assert base and base[1] == "nvcr.io/nvidia/tritonserver:25.12-py3"
    # the image's tag, its version label, its base label and the stand-in hack/images.sh tags all say so
    assert types.DEFAULT_TRITON_IMAGE.split(":")[1].startswith(f"{base[2]}-conch")
    assert f'org.opencontainers.image.version="{types.DEFAULT_TRITON_IMAGE.split(":")[1]}"' in text
    assert f'org.opencontainers.image.base.name="{base[1]}"' in text
    assert f"\nTRITON_BASE={base[1]}\n" in (ROOT / "hack" / "images.sh").read_text()
    assert f"-t {types.DEFAULT_TRITON_IMAGE} ." in text, "the documented build command makes the default"
    assert types.DEFAULT_TRITON_IMAGE in (IMAGES / "README.md").read_text()
    assert types.DEFAULT_TRITON_IMAGE in (CHART / "README.md").read_text()
    uid = common.restricted_pod_security()["runAsUser"]
    assert re.search(rf"^USER {uid}:{uid}$", _final_stage("triton.Dockerfile"), re.M)
    for label in ("title", "description", "licenses", "version", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text


def _imports(folder: Path) -> set[str]:
    """Top-level modules imported anywhere (lazily too) by the .py files under `folder`."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names)


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Normalised names of the distributions these requirements pull in (as installed here)."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        env_ok = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted | {""})
        name = canonicalize_name(req.name)
        if not env_ok or name in seen:
            continue
        seen.add(name)
        try:
            deps = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend((Requirement(d), set(req.extras)) for d in deps)
    return seen


def test_builder_extra_provides_what_the_builder_imports() -> None:
    """images/builder.Dockerfile installs .[builder]: that must hold every module the builder imports."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["builder"]
    dists = _closure(wanted, set())
    owners = metadata.packages_distributions()
    # ours (the python-backend siblings too) and Triton's own
    own = {
        "model_repo_builder",
        "triton_python_backend_utils",
        "textproc",
        "llmsched",
        "llmbatch",
        "llmmetrics",
    }
    missing = {
        m: owners.get(m, [])
        for m in _imports(ROOT / "model_repo_builder") - own
        if not any(canonicalize_name(d) in dists for d in owners.get(m, []))
    }
    assert {"transformers", "torch", "onnxruntime"} <= _imports(ROOT / "model_repo_builder")
    assert not missing, f"the builder imports modules that .[builder] does not install: {missing}"


DOCKERFILES = (
    "operator.Dockerfile",
    "builder.Dockerfile",
    "triton.Dockerfile",
    "tritonserver-standin.Dockerfile",
)


def test_dockerfiles_build_offline() -> None:
    """No `# syntax=` line (BuildKit would pull the frontend image from a registry); every pip install
    can be pointed at images/wheels alone (PIP_NO_INDEX), as hack/images.sh does with --network=none."""
    for name in DOCKERFILES:
        text = (IMAGES / name).read_text()
        assert not re.search(r"^#\s*syntax=", text, re.M | re.I), name
        runs = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        installs = [line for line in runs if "pip install" in line and "--no-index" not in line]
        for line in installs:
            assert "--find-links /wheels" in line, f"{name}: {line}"
        if installs:
            assert "ARG PIP_NO_INDEX" in text and "source=images/wheels,target=/wheels" in text, name
    script = (ROOT / "hack" / "images.sh").read_text()
    assert "build --network=none --build-arg PIP_NO_INDEX=1" in script
    assert "--iptables=false --ip-forward=false" in script and "--bridge=none" in script
    assert "unshare --net" in script, "dockerd runs in a network namespace of its own"


def test_images_sh_builds_the_names_the_chart_and_operator_default_to() -> None:
    from conch.api import types

    names = subprocess.run(
        ["bash", str(ROOT / "hack" / "images.sh"), "names"], capture_output=True, text=True, check=True
    ).stdout.split()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    operator = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    assert names == [operator, types.DEFAULT_BUILDER_IMAGE, types.DEFAULT_TRITON_IMAGE]
    readme = (IMAGES / "README.md").read_text()
    for name, dockerfile in zip(names, DOCKERFILES, strict=False):
        assert f"-f images/{dockerfile} -t {name} ." in (IMAGES / dockerfile).read_text()
        assert name in readme and name in (CHART / "README.md").read_text()


def test_pyproject_deps_lists_core_and_extra_without_self_references() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = subprocess.run(
        [sys.executable, str(IMAGES / "pyproject_deps.py"), str(ROOT / "pyproject.toml"), "builder"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert out == project["dependencies"] + project["optional-dependencies"]["builder"]
    bad = subprocess.run(
        [sys.executable, str(IMAGES / "pyproject_deps.py"), str(ROOT / "pyproject.toml"), "nope"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "no extra named ['nope']" in bad.stderr
