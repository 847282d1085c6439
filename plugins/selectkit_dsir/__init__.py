"""DSIR for selectkit: importance resampling on hashed n-grams (Xie et al. 2023).

``--method dsir`` scores a pool toward a target set. The streaming functions work on any
iterable of texts, for corpora larger than memory::

    from selectkit_dsir import bucket_log_ratio, hashed_counts, importance_log_weights
"""

from selectkit import hookimpl
from selectkit_dsir.engine import (
    HashedNgrams,
    bucket_log_ratio,
    hashed_counts,
    importance_log_weights,
)
from selectkit_dsir.hashing import tokenize
from selectkit_dsir.method import DSIR, DSIRParams


@hookimpl
def selectkit_register_methods():
    """The ``dsir`` method."""
    return [DSIR]


__all__ = [
    "DSIR",
    "DSIRParams",
    "HashedNgrams",
    "bucket_log_ratio",
    "hashed_counts",
    "importance_log_weights",
    "selectkit_register_methods",
    "tokenize",
]
