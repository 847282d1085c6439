"""Content hashes of what determines a feature set's bytes: weights, tokenizer, files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def tensors_digest(named: Iterable[tuple[str, Any]]) -> str:
    """BLAKE2b over each tensor's name, dtype, shape and bytes, in the given order."""
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
