"""CRAIG for selectkit: weighted coresets by facility location on gradients
(Mirzasoleiman et al. 2020)."""

from selectkit_craig.method import Craig, CraigParams
from selectkit_craig.plugin import selectkit_register_methods

__all__ = ["Craig", "CraigParams", "selectkit_register_methods"]
