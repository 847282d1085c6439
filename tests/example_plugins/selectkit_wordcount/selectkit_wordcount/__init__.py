"""A third-party plugin registering the method name 'keyword', as selectkit-keyword does: the
host refuses the plain name for both, and each stays reachable by its qualified name."""

import numpy as np

from selectkit import Method, Scores, hookimpl


class FewestWords(Method):
    """Records with the fewest words."""

    name = "keyword"

    def objective(self, pool, target, context):
        return Scores(-np.asarray([len(r.text.split()) for r in pool], dtype=float))


@hookimpl
def selectkit_register_methods():
    return [FewestWords]
