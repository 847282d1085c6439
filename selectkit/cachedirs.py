"""Where selectkit keeps what it can compute again: the feature store's folder, and the folders
beside it (warmups, converted models). A leaf module, so every layer can find them."""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    """The feature store's folder: ``$SELECTKIT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/selectkit/features``, else ``~/.cache/selectkit/features``."""
    if os.environ.get("SELECTKIT_CACHE_DIR"):
        return Path(os.environ["SELECTKIT_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "selectkit" / "features"


def beside(store_root: Path, name: str) -> Path:
    """Folder ``name`` of the cache whose store is ``store_root``: a sibling of a store folder
    named ``features`` (the default layout), else a folder inside the store's."""
    return store_root.parent / name if store_root.name == "features" else store_root / name
