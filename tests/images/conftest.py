"""Fixtures of the image tests: the images built by hack/images.sh in its private docker daemon."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES_SH = ROOT / "hack" / "images.sh"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "images: builds the container images with docker (hack/images.sh)")


@dataclass(frozen=True)
class Images:
    """The built images' names and a `docker` bound to hack/images.sh's daemon."""

    operator: str
    builder: str
    triton: str

    @staticmethod
    def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", str(IMAGES_SH), "docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            command = " ".join(args)
            raise AssertionError(f"docker {command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc


def _images_sh(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(IMAGES_SH), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def images() -> Iterator[Images]:
    """`hack/images.sh build` (cold: about 3 GB of wheels and 10+ minutes; warm: cached layers), with the
    daemon kept up for the checks and stopped afterwards if this fixture started it."""
    was_up = _images_sh("docker", "version", timeout=30).returncode == 0
    up = _images_sh("up", timeout=120)
    assert up.returncode == 0, up.stderr
    try:
        build = _images_sh("build", timeout=3600)
        assert build.returncode == 0, f"hack/images.sh build failed:\n{build.stderr[-5000:]}"
        print(build.stderr[-1500:])
        names = _images_sh("names", timeout=30).stdout.split()
        yield Images(*names)
    finally:
        if not was_up and os.environ.get("CONCH_KEEP_DOCKERD") != "1":
            _images_sh("down", timeout=120)
