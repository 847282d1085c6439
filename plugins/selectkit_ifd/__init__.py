"""IFD: Instruction-Following Difficulty (Cherry LLM, Superfiltering)."""

from selectkit import hookimpl
from selectkit_ifd.method import Ifd


@hookimpl
def selectkit_register_methods():
    return [Ifd]
