"""The container image's pip requirements: petavox's dependencies from pyproject.toml, with
exact pins replacing the dependencies of the same name (onnxruntime-gpu replaces onnxruntime).

    python image_requirements.py PYPROJECT PIN [PIN ...] > requirements.txt

The Dockerfile runs this (Python >= 3.11, for tomllib); tests/deploy resolve its output.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

#: a pin for the key's distribution replaces the dependency named by the value
REPLACES = {"onnxruntime-gpu": "onnxruntime"}


def name_of(requirement: str) -> str:
    """The normalised distribution name of a requirement (no extras, no version)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, pins: list[str]) -> list[str]:
    """The project's dependencies with each pin in place of the dependency it replaces."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    names = {name_of(d) for d in dependencies}
    replaced = set()
    for pin in pins:
        if "==" not in pin:
            raise ValueError(f"{pin!r} is not an exact pin (NAME==VERSION)")
        target = REPLACES.get(name_of(pin), name_of(pin))
        if target not in names:
            raise ValueError(f"{pin!r} replaces no dependency of the project")
        replaced.add(target)
    return [d for d in dependencies if name_of(d) not in replaced] + pins


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(requirements(Path(argv[0]), argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
