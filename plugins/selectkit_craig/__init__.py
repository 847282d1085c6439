"""CRAIG for selectkit: weighted coresets by facility location on gradients
(Mirzasoleiman et al. 2020)."""

from selectkit import hookimpl
from selectkit_craig.method import CRAIG, CRAIGParams


@hookimpl
def selectkit_register_methods():
    """The ``craig`` method."""
    return [CRAIG]


__all__ = ["CRAIG", "CRAIGParams", "selectkit_register_methods"]
