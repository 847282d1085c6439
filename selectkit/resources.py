"""Will this allocation fit? Sizes a user controls, checked against the memory there is.

A parameter that sizes an array (DSIR's hash buckets, a projection's dimension times the pool,
a kernel's dimension squared, a batch) can ask for more memory than the machine has; numpy then
dies in a ``MemoryError`` part-way, or the system swaps until the run is useless. The methods
estimate what they will allocate and call :func:`check_memory` first, so the user gets one
error that says how much is needed, how much there is, and what to change.
"""

from __future__ import annotations

import os
from pathlib import Path

from selectkit.errors import ParamError

MEMINFO = Path("/proc/meminfo")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation without swapping: ``MemAvailable`` from
    ``/proc/meminfo`` (Linux), else free physical pages from ``os.sysconf``; ``None`` when
    the system tells neither."""
    try:
        for line in MEMINFO.read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                amount, _, unit = value.strip().partition(" ")
                return int(amount) * (1024 if unit.lower() == "kb" else 1)
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def human_bytes(size: float) -> str:
    """``745 GiB``, ``1.5 MiB``: a size in binary units, three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.3g} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def check_memory(needed: int, what: str, change: str) -> None:
    """Refuse, with a :class:`ParamError`, an allocation of about ``needed`` bytes that does not
    fit in the memory available now.

    ``what`` names who allocates it ("dsir: num_buckets=10**11 (bucket counts and
    log-weights)"), ``change`` says what to do instead ("use fewer buckets"). When the system
    does not tell its available memory, nothing is refused.
    """
    available = available_memory()
    if available is None or needed <= available:
        return
    raise ParamError(
        f"{what} needs about {human_bytes(needed)} of memory, and {human_bytes(available)} "
        f"is available; {change}"
    )
