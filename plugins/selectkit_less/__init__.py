"""LESS: targeted instruction-data selection by LoRA-gradient similarity (Xia et al. 2024)."""

from selectkit import hookimpl
from selectkit_less.method import LESS


@hookimpl
def selectkit_register_methods():
    """The ``less`` method."""
    return [LESS]
