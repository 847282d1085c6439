"""What every output records of where it came from: library versions, and values made plain
JSON. A leaf module, so the store and the trainers record provenance without importing the
selection run."""

from __future__ import annotations

import math
import platform
import sys
from importlib import metadata
from typing import Any

import numpy as np

from selectkit import __version__


def versions() -> dict[str, str]:
    """Versions of Python, the platform and every library that can change a result."""
    found = {
        "selectkit": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
    }
    for dist in ("pluggy", "cvxpy", "torch", "transformers", "peft", "accelerate"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def jsonable(value: Any) -> Any:
    """Plain JSON only: numpy values become Python ones, non-finite floats become null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
