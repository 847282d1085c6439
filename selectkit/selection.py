"""The result of a selection run: what was chosen, why, and everything needed to redo it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from selectkit.data.pool import Pool, Record
from selectkit.solvers.base import Solution


@dataclass(frozen=True)
class Selection:
    """Selected pool positions in selection order, with their ids and weights.

    ``scores`` holds the objective value of every pool record (aligned with the pool), so
    selections of different methods can be compared on the same records. ``weights`` is set when
    the method produces per-record training weights; it is aligned with ``indices``.
    ``group_weights`` (group name → weight) is set when the method weights whole groups;
    training on the selection samples groups in proportion to them.
    ``manifest`` records the configuration, versions, seed, fingerprints and timings.
    """

    indices: np.ndarray
    ids: list[str]
    scores: np.ndarray
    weights: np.ndarray | None
    solution: Solution
    manifest: dict[str, Any]
    group_weights: dict[str, float] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def check_pool(self, pool: Pool) -> None:
        """Refuse a pool other than the one this selection was made on."""
        if pool.fingerprint != self.manifest["pool"]["fingerprint"]:
            raise ValueError("this selection was made on a different pool (fingerprints differ)")

    def records(self, pool: Pool) -> list[Record]:
        """The selected records of ``pool``, in selection order (all in memory: to write them,
        :meth:`Pool.json_lines` streams)."""
        self.check_pool(pool)
        return [pool[i] for i in self.indices.tolist()]

    def group_shares(self, pool: Pool) -> dict[str | None, float]:
        """Fraction of the selected records from each group, the largest first (ties in the
        order the groups first appear in the selection)."""
        codes, names = pool.group_codes()
        picked = codes[self.indices]
        total = len(picked)
        if not total:
            return {}
        found, first, counts = np.unique(picked, return_index=True, return_counts=True)
        order = np.lexsort((first, -counts))
        table: list[str | None] = [*names, None]
        return {table[int(found[k])]: int(counts[k]) / total for k in order}
