"""Weight hashes: what a store key is made of must not change when the code that hashes does."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from selectkit.store.fingerprints import tensors_digest


def test_the_weights_digest_is_blake2b_of_names_dtypes_shapes_and_bytes():
    named = [
        ("a.weight", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
        ("b.bias", torch.tensor([1.5, -2.0], dtype=torch.bfloat16)),
        ("c.t", torch.arange(8, dtype=torch.float32).reshape(2, 4).t()),  # not contiguous
    ]
    expected = hashlib.blake2b(digest_size=32)
    for name, tensor in named:
        data = tensor.contiguous()
        expected.update(f"{name}|{data.dtype}|{tuple(data.shape)}\n".encode())
        expected.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert tensors_digest(named) == expected.hexdigest()
    # Pinned: a store key computed by any earlier version stays the same.
    single = [("w", torch.from_numpy(np.arange(4, dtype=np.float32)))]
    assert (
        tensors_digest(single)
        == hashlib.blake2b(
            b"w|torch.float32|(4,)\n" + np.arange(4, dtype=np.float32).tobytes(), digest_size=32
        ).hexdigest()
    )
