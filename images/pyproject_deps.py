"""Print the requirements of pyproject.toml's core and the named extras, one per line.

The image builds install these first, in a layer of their own (cached until pyproject.toml changes),
and the project itself afterwards with --no-deps; stdlib only, so it runs on the bare base image.
Usage: python pyproject_deps.py PYPROJECT EXTRA...
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    """The project's own dependencies plus those of `extras` (self-references like conch[x] dropped)."""
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra named {unknown} (has {sorted(optional)})")
    own = re.compile(rf"^{re.escape(project['name'])}\b")
    wanted = list(project.get("dependencies", []))
    for extra in extras:
        wanted.extend(r for r in optional[extra] if not own.match(r))
    return wanted


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
