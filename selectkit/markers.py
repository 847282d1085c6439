"""The hook markers, in a module that imports nothing of selectkit's.

Plugins (first-party and third-party) import ``hookimpl`` from the package root
(``from selectkit import hookimpl``); the built-ins from here. ``hookspecs.py`` only declares
the contract, so nothing that implements a hook imports the contract back.
"""

import pluggy

PROJECT = "selectkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
