"""Registration of the ``craig`` method with the selectkit host."""

from selectkit import hookimpl
from selectkit_craig.method import Craig


@hookimpl
def selectkit_register_methods():
    """The ``craig`` method."""
    return [Craig]
