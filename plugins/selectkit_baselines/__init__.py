"""The baselines every data-selection paper reports: random and longest."""

from selectkit import hookimpl
from selectkit_baselines.methods import Longest, Random


@hookimpl
def selectkit_register_methods():
    return [Random, Longest]
