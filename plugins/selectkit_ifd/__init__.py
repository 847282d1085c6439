"""IFD: Instruction-Following Difficulty (Cherry LLM, Superfiltering)."""

from selectkit.hookspecs import hookimpl
from selectkit_ifd.method import Ifd


@hookimpl
def selectkit_register_methods():
    return [Ifd]
