"""Registration of the ``gradmatch`` method with the selectkit host."""

from selectkit import hookimpl
from selectkit_gradmatch.method import GradMatch


@hookimpl
def selectkit_register_methods():
    """The ``gradmatch`` method."""
    return [GradMatch]
