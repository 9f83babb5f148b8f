"""petavox: chunked, resumable connectomics reconstruction on Ray and precomputed layers.

The Python API, as the command line has it (see README "Python API")::

    import petavox

    petavox.ingest("stack.npy", "run1/raw", resolution=(8, 8, 33))
    petavox.run("run.yaml")  # a RunConfig, a dict as the YAML, or the YAML file's path
    petavox.plan("run.yaml")  # what `petavox plan --json` prints; writes nothing
    petavox.status("run.yaml")  # the rows `petavox status` prints

`run`, `plan`, `status` and one function per stage (`petavox.ingest`, `petavox.segment`, ...)
live in `petavox.workflows.api` and load on first use. Every Ray worker imports this file
before `petavox.tasks`, so it imports nothing when loaded (a test checks): `__version__` is
looked up on first use too.

This file is the package `petavox`; it lives in workflows/petavox/ because the repository's
top level is fixed (pyproject.toml's `package-dir` maps it).
"""

from __future__ import annotations

#: what `petavox.workflows.api` provides besides the stage functions, loaded on first use
_API = frozenset({"run", "run_report", "plan", "status", "RunConfig", "ConfigError"})
#: the subpackages: `from petavox import tasks` asks for them before they are imported
_PACKAGES = frozenset({"tasks", "workflows"})


def petavox_version() -> str:
    """The installed distribution's version; "unknown" when run from a source tree that is not
    installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("petavox")
    except PackageNotFoundError:
        return "unknown"


def _stage_names() -> tuple[str, ...]:
    from petavox.workflows.stages import STAGE_NAMES

    return STAGE_NAMES


def __getattr__(name: str) -> object:  # PEP 562: the API loads when it is first used
    if name == "__version__":
        value: object = petavox_version()
    elif name in _API or (
        not name.startswith("_") and name not in _PACKAGES and name in _stage_names()
    ):
        from petavox.workflows import api

        value = getattr(api, name)
    else:
        raise AttributeError(f"module 'petavox' has no attribute {name!r}")
    globals()[name] = value  # later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), "__version__", *_API, *_stage_names()})
