"""IFD: Instruction-Following Difficulty (Cherry LLM, Superfiltering)."""

from selectkit import hookimpl
from selectkit_ifd.method import IFD


@hookimpl
def selectkit_register_methods():
    """The ``ifd`` method."""
    return [IFD]
