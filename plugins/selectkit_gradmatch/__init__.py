"""GRAD-MATCH for selectkit: a weighted subset whose gradient matches the target's
(Killamsetty et al. 2021)."""

from selectkit import hookimpl
from selectkit_gradmatch.method import GradMatch, GradMatchParams


@hookimpl
def selectkit_register_methods():
    """The ``gradmatch`` method."""
    return [GradMatch]


__all__ = ["GradMatch", "GradMatchParams", "selectkit_register_methods"]
