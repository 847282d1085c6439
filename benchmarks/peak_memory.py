"""Peak resident memory of a stretch of work in this process, for the benchmarks' memory figures.

Linux lets a process reset its high-water mark (``VmHWM``) by writing 5 to
``/proc/self/clear_refs``; where that is not allowed, the figure is the lifetime peak
(``ru_maxrss``), an upper bound, and says so."""

from __future__ import annotations

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> int:
    fields = dict(line.split(":", 1) for line in _STATUS.read_text().splitlines())
    return int(fields[field].split()[0]) * 1024


def start() -> tuple[int, bool]:
    """Reset the high-water mark; ``(baseline bytes, whether the reset worked)``."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False
    return _status_bytes("VmRSS"), True


def growth(baseline: tuple[int, bool]) -> int:
    """Bytes the peak rose above ``baseline`` (from :func:`start`) since then."""
    base, reset = baseline
    peak = (
        _status_bytes("VmHWM")
        if reset
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return peak - base
