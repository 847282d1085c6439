"""GraNd and EL2N: the early-training difficulty scores of "Deep Learning on a Data Diet"."""

from selectkit import hookimpl
from selectkit_datadiet.methods import EL2N, GraNd


@hookimpl
def selectkit_register_methods():
    return [GraNd, EL2N]
