"""Content hashes of what determines a feature set's bytes: weights, tokenizer, files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Digests already computed, keyed by the tensors they were computed from (see
#: :func:`tensors_digest`); each entry also holds those tensors, so no id in its key can
#: belong to another tensor while the entry lives.
TensorsMemo = dict[tuple[tuple[Any, ...], ...], tuple[str, tuple[Any, ...]]]


def tensors_digest(named: Iterable[tuple[str, Any]], *, memo: TensorsMemo | None = None) -> str:
    """BLAKE2b over each tensor's name, dtype, shape and bytes, in the given order.

    With ``memo`` the digest of a sequence seen before is not computed again: an entry is
    reused only for the same names of the same tensor objects, at the same in-place version
    (autograd's counter, which every in-place torch operation bumps), storage, dtype, shape
    and device. Writes that torch does not count (through ``.data`` or a NumPy view) are not
    seen, so pass a memo only for weights nobody changes that way: a loaded model's base
    weights (:attr:`selectkit.models.loading.LoadedModel.digests`), never an adapter being
    trained. The memo keeps the tensors it saw alive, which costs nothing for a model's own
    weights while the model lives. Inference-mode tensors have no version counter, so they
    are always hashed."""
    if memo is None:
        return _digest(named)
    pairs = list(named)
    try:
        key = tuple(_identity(name, tensor) for name, tensor in pairs)
    except RuntimeError:  # "Inference tensors do not track version counter"
        return _digest(pairs)
    found = memo.get(key)
    if found is None:
        found = memo[key] = (_digest(pairs), tuple(tensor for _, tensor in pairs))
    return found[0]


def _identity(name: str, tensor: Any) -> tuple[Any, ...]:
    """What a memo entry is keyed on for one tensor: if any of it changes, the bytes may have."""
    return (
        name,
        id(tensor),
        tensor._version,
        tensor.data_ptr(),
        str(tensor.dtype),
        tuple(tensor.shape),
        str(tensor.device),
    )


def _digest(named: Iterable[tuple[str, Any]]) -> str:
    import torch

    digest = hashlib.blake2b(digest_size=32)
    for name, tensor in named:
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}\n".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy())  # hashed in place, no copy
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """SHA-256 of a tokenizer's full definition (vocabulary, merges, normalizers, specials) and
    its chat template, so two tokenizers with one name but different files differ."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = backend.to_str()
    else:
        definition = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    parts = [
        type(tokenizer).__name__,
        definition,
        getattr(tokenizer, "chat_template", None) or "",
        json.dumps(
            [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        ),
    ]
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()
