"""GRAD-MATCH for selectkit: a weighted subset whose gradient matches the target's
(Killamsetty et al. 2021)."""

from selectkit_gradmatch.method import GradMatch, GradMatchParams
from selectkit_gradmatch.plugin import selectkit_register_methods

__all__ = ["GradMatch", "GradMatchParams", "selectkit_register_methods"]
