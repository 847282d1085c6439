"""LESS: targeted instruction-data selection by LoRA-gradient similarity (Xia et al. 2024)."""

from selectkit import hookimpl
from selectkit_less.method import Less


@hookimpl
def selectkit_register_methods():
    return [Less]
