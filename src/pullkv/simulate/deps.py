"""The simulator's optional dependencies (the ``simulate`` extra), loaded on first use.

``pullkv simulate`` needs ``airportsdata`` (the locations) and ``matplotlib`` (the report's
plots); neither is needed to run pullkv itself, so they are an extra, and a missing one is
one clear line naming the command that installs them.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

INSTALL_HINT = "pip install 'pullkv[simulate]'"


class MissingDependency(RuntimeError):
    """An optional dependency of the simulator is not installed."""


def require(module: str) -> Any:
    """Import ``module``, or raise MissingDependency naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"pullkv simulate needs the {module.split('.')[0]!r} package, which is not "
            f"installed: {INSTALL_HINT}"
        ) from exc


@functools.cache
def airports() -> dict[str, dict[str, Any]]:
    """Airports by IATA code (``airportsdata``), loaded once."""
    data: dict[str, dict[str, Any]] = require("airportsdata").load("IATA")
    return data


def check_all() -> None:
    """Raise MissingDependency unless every optional dependency is importable."""
    for module in ("airportsdata", "matplotlib"):
        require(module)
