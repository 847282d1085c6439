"""DsDm: selection by linear datamodels, estimated with TRAK or fitted on retrained models."""

from selectkit import hookimpl
from selectkit_datamodels.method import Datamodels


@hookimpl
def selectkit_register_methods():
    """The ``datamodels`` method."""
    return [Datamodels]
