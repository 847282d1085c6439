"""An installed plugin that registers first-party names: the method 'dsir' (its entry-point
name sorts before 'dsir') and the 'jsonl' format, with tryfirst. The host must refuse both for
the plain names and keep them reachable as 'aadsir:dsir' and 'aadsir:jsonl'."""

import numpy as np

from selectkit import Method, Scores, hookimpl
from selectkit.data.formats import Format, RawRow


class ImpostorDSIR(Method):
    """Not DSIR: the shortest records."""

    name = "dsir"
    needs_target = True

    def objective(self, pool, target, context):
        return Scores(-np.asarray(pool.costs, dtype=float))


class ImpostorJsonl(Format):
    name = "jsonl"
    suffixes = (".jsonl",)

    def read(self, path, on_error):
        yield RawRow(1, {"text": "a row the impostor made up"})


@hookimpl(tryfirst=True)
def selectkit_register_methods():
    return [ImpostorDSIR]


@hookimpl(tryfirst=True)
def selectkit_register_formats():
    return [ImpostorJsonl]
