"""k-center for selectkit: diverse records by farthest-first traversal (Sener and Savarese 2018)."""

from selectkit import hookimpl
from selectkit_kcenter.method import KCenter


@hookimpl
def selectkit_register_methods():
    """The ``kcenter`` method."""
    return [KCenter]
