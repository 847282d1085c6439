"""Facility location on feature rows: similarities, marginal gains and cluster sizes, computed
in blocks of columns (or rows) so memory stays O(n · block), never O(n²).

Everything runs in float32 with torch on the CPU (threaded matmuls and elementwise work);
sums are accumulated in float64. torch is imported when a :class:`Similarity` is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from selectkit.rows import RowSource, read_all

if TYPE_CHECKING:
    import torch


class Similarity:
    """Non-negative pairwise similarities of the pool's rows, held in memory as float32.

    ``euclidean``: ``top − ||x_i − x_j||`` with ``top = 2 · max_i ||x_i − mean||`` (at least the
    largest distance, so every similarity is >= 0). ``cosine``: ``(1 + cos(x_i, x_j)) / 2``,
    with ``top = 1``; a zero row has cosine 0 with everything. The metric and memory limit are
    the objective's, checked there.
    """

    def __init__(self, rows: RowSource, metric: str, memory_limit: int) -> None:
        import torch

        x = torch.from_numpy(read_all(rows, memory_limit))
        self.metric = metric
        self.n = rows.num_rows
        if metric == "cosine":
            norms = torch.linalg.vector_norm(x, dim=1)
            x = x * torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))[:, None]
            self.top = 1.0
        else:
            # Distances do not change under a shift; centring shrinks the norms, and with them
            # the float32 cancellation in |x|² + |y|² − 2xy (about sqrt(eps) · |x| for
            # near-duplicates). This is torch's float32 mean, not CentredRows' float64 one:
            # switching would move every similarity by an ulp and CRAIG's outputs with it.
            x = x - x.mean(dim=0)
            self.sq = (x * x).sum(dim=1)
            # Squared distances below float32's resolution of |x|² count as 0, so a record is
            # at distance 0 from itself; folded into the column norms, it costs nothing.
            self.floor = 8 * float(torch.finfo(torch.float32).eps) * float(self.sq.max())
            radius = float(torch.linalg.vector_norm(x, dim=1).max())
            self.top = 2.0 * radius if radius > 0 else 1.0
        self.x = x
        # Work in blocks of about ``cells`` similarities: small enough to stay in the CPU's
        # cache between the matmul and the elementwise passes (2.7x faster than whole
        # columns at n = 20,000), and within memory_limit.
        self.cells = max(1, min(_CELLS, int(memory_limit) // 8))

    def between(self, rows: slice, cols: np.ndarray) -> torch.Tensor:
        """Similarities of rows ``rows`` (a slice) to records ``cols``, as a float32 matrix."""
        import torch

        picked = torch.from_numpy(np.asarray(cols, dtype=np.int64))
        a, b = self.x[rows], self.x[picked]
        if self.metric == "cosine":
            return (a @ b.T).add_(1.0).mul_(0.5)
        out = torch.addmm(self.sq[rows][:, None], a, b.T, alpha=-2.0)
        out.add_(self.sq[picked][None, :] - self.floor).clamp_(min=0.0).sqrt_()
        return out.neg_().add_(self.top)

    def gains(self, cols: np.ndarray, best: torch.Tensor) -> np.ndarray:
        """``Σ_i max(0, sim(i, j) − best_i)`` for each record ``j`` in ``cols``."""
        cols = np.asarray(cols, dtype=np.int64)
        out = np.empty(len(cols), dtype=np.float64)
        width = max(1, min(len(cols), _MAX_COLS, self.cells))
        height = max(1, self.cells // width)
        for offset in range(0, len(cols), width):
            part = cols[offset : offset + width]
            total = None
            for start in range(0, self.n, height):
                rows = slice(start, start + height)
                sims = self.between(rows, part).sub_(best[rows][:, None]).clamp_(min=0.0)
                column = sims.sum(dim=0, dtype=_float64())
                total = column if total is None else total.add_(column)
            out[offset : offset + len(part)] = total.numpy()
        return out

    def nearest(self, selected: np.ndarray) -> np.ndarray:
        """For every record, the position in ``selected`` of its most similar selected record
        (the earlier one on ties)."""
        out = np.empty(self.n, dtype=np.int64)
        height = max(1, self.cells // max(1, len(selected)))
        for start in range(0, self.n, height):
            rows = slice(start, start + height)
            out[rows] = self.between(rows, selected).argmax(dim=1).numpy()
        return out


#: Similarities per working block, and candidates per block of columns.
_CELLS = 1 << 20
_MAX_COLS = 1024


def singleton_values(similarity: Similarity) -> np.ndarray:
    """``F({j}) = Σ_i sim(i, j)`` for every record ``j``."""
    import torch

    return similarity.gains(np.arange(similarity.n), torch.zeros(similarity.n))


class FacilityState:
    """The current selection's best similarity for every pool record, and ``F`` of it."""

    def __init__(self, similarity: Similarity) -> None:
        import torch

        self.similarity = similarity
        self.best = torch.zeros(similarity.n, dtype=torch.float32)
        self.value = 0.0

    def gains(self, candidates: np.ndarray) -> np.ndarray:
        """Marginal gain of each candidate: ``Σ_i max(0, sim(i, j) − best_i)``."""
        return self.similarity.gains(candidates, self.best)

    def add(self, index: int) -> None:
        import torch

        column = self.similarity.between(slice(None), np.array([index]))[:, 0]
        torch.maximum(self.best, column, out=self.best)
        self.value = float(self.best.sum(dtype=_float64()))

    def weights(self, selected: np.ndarray) -> np.ndarray:
        """Cluster sizes: how many pool records are most similar to each selected record (ties
        go to the earlier one in ``selected``); they sum to the pool size."""
        selected = np.asarray(selected, dtype=np.int64)
        if len(selected) == 0:
            return np.zeros(0)
        nearest = self.similarity.nearest(selected)
        return np.bincount(nearest, minlength=len(selected)).astype(np.float64)


def _float64() -> torch.dtype:
    import torch

    return torch.float64
