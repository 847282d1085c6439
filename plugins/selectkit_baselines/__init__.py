"""The baselines every data-selection paper reports: random and longest."""

from selectkit import hookimpl
from selectkit_baselines.longest import Longest
from selectkit_baselines.random import Random


@hookimpl
def selectkit_register_methods():
    """The ``random`` and ``longest`` methods."""
    return [Random, Longest]
