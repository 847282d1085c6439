"""TRAK: attribution by a kernel regression on projected gradients (Park et al. 2023)."""

from selectkit import hookimpl
from selectkit_trak.method import TRAK


@hookimpl
def selectkit_register_methods():
    """The ``trak`` method."""
    return [TRAK]
