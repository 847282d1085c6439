"""The baselines every data-selection paper reports: random, balanced random and longest."""

from selectkit import hookimpl
from selectkit_baselines.balanced_random import BalancedRandom
from selectkit_baselines.longest import Longest
from selectkit_baselines.random import Random


@hookimpl
def selectkit_register_methods():
    """The ``random``, ``balanced_random`` and ``longest`` methods."""
    return [Random, BalancedRandom, Longest]
