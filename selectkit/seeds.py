"""The range every seed must be in, checked once for every entry point.

Seeds reach NumPy's legacy ``RandomState`` (through the Hugging Face Trainer's ``set_seed``),
which takes 32-bit values, as well as ``default_rng`` and torch, which take more; one range that
all accept keeps a seed from failing deep inside a library after minutes of work.
"""

from __future__ import annotations

import numbers

from selectkit.errors import ParamError

SEED_MAX = 2**32 - 1


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int, or a :class:`ParamError` saying the range."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ParamError(f"{what} must be a whole number from 0 to {SEED_MAX}, not {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ParamError(f"{what} must be from 0 to {SEED_MAX}, not {seed}")
    return int(seed)
