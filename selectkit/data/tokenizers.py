"""The built-in ``selectkit_load_tokenizer`` hook: local paths, hub names and the bundled model
(:meth:`selectkit.host.Host.load_tokenizer` asks the plugins).

``smollm2`` is reserved: only first-party plugins are asked for it. Any other spec is asked of
the plugins first and of the built-in fallback (a local folder, a hub name) last.

transformers is imported inside the functions, never at module level, so importing
``selectkit.data`` stays light (no torch, no transformers) for model-free methods and the CLI.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from selectkit import bundled
from selectkit.bundled import SMOLLM2
from selectkit.errors import ParamError
from selectkit.markers import hookimpl

# "gpt2", "org/name", "org/name-v1.5": what a Hugging Face hub repository id looks like.
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


def looks_like_hub_name(spec: str) -> bool:
    """Whether ``spec`` has the form of a hub repository id rather than a file path."""
    return bool(_HUB_NAME.match(spec)) and ".." not in spec and not spec.endswith(".")


def remote_code_refused(exc: BaseException, what: str, python: str) -> ParamError | None:
    """The error for ``what`` (``"tokenizer 'x' from ..."``) refused by transformers because it
    needs its own code, or None for another error. transformers tells the user to pass
    ``trust_remote_code=True``, which is no help on the command line: say both spellings."""
    if "trust_remote_code" not in str(exc):
        return None
    return ParamError(
        f"{what} needs to run its own Python code, which is never run unless you allow it: "
        f"read that code, then pass --trust-remote-code (in Python: {python})"
    )


def is_reserved_tokenizer(spec: str) -> bool:
    """Whether ``spec`` names a tokenizer selectkit ships, which only first-party plugins
    answer."""
    return spec == SMOLLM2


@hookimpl(trylast=True)
def selectkit_load_tokenizer(spec: str, trust_remote_code: bool) -> Any | None:
    """A tokenizer from a local directory, the hub, or ``smollm2`` (the bundled offline model);
    ``None`` for a spec that is neither an existing path nor a hub-like name. Called last for an
    ordinary spec, and alone with the other first-party plugins for ``smollm2``."""
    if spec == SMOLLM2:
        return bundled.load_tokenizer()
    path = Path(spec).expanduser()
    if path.exists():
        source = str(path)
    elif looks_like_hub_name(spec):
        source = spec
    else:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:  # hub and file errors come in many types; say which spec failed
        where = f"local path {source}" if path.exists() else "the Hugging Face hub (offline?)"
        refused = remote_code_refused(
            exc, f"tokenizer '{spec}' from {where}", "trust_remote_code=True"
        )
        if refused is not None:
            raise refused from exc
        raise ParamError(f"cannot load tokenizer '{spec}' from {where}: {exc}") from exc


def unknown_tokenizer(spec: str) -> ParamError:
    """The error for a tokenizer spec no plugin knows."""
    return ParamError(
        f"no tokenizer '{spec}': not an existing path, not a hub name, and no plugin knows it "
        f"(built-in names: {SMOLLM2})"
    )
