"""Bilevel reweighting for selectkit: validation-driven per-record or per-group weights
(learning to reweight, Ren et al. 2018)."""

from selectkit import hookimpl
from selectkit_bilevel.method import Bilevel, BilevelParams


@hookimpl
def selectkit_register_methods():
    """The ``bilevel`` method."""
    return [Bilevel]


__all__ = ["Bilevel", "BilevelParams", "selectkit_register_methods"]
