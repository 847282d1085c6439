"""GraNd and EL2N: the early-training difficulty scores of "Deep Learning on a Data Diet"."""

from selectkit import hookimpl
from selectkit_datadiet.el2n import EL2N
from selectkit_datadiet.grand import GraNd


@hookimpl
def selectkit_register_methods():
    """The ``grand`` and ``el2n`` methods."""
    return [GraNd, EL2N]
