"""TracIn-CP: influence on a target as checkpoint-summed gradient inner products."""

from selectkit import hookimpl
from selectkit_tracin.method import TracIn


@hookimpl
def selectkit_register_methods():
    """The ``tracin`` method."""
    return [TracIn]
