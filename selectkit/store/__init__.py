"""The gradient-feature store: content-addressed, memory-mappable, resumable, sharded, checked.

An entry is the directory ``<root>/<key_id>/``, named by the SHA-256 of its key (everything that
determines the features: model, data fingerprint, projection, ...). It holds ``key.json``;
``manifest.json`` (entry format, layout, meta, the SHA-256 of ``order.npy`` and, once finalized,
completeness and the SHA-256 of every small file); ``order.npy`` (the block order);
``status.npy`` (one :class:`RowStatus` byte per pool row); ``rows-00000.npy``, ... (the features
in pool order, split every ``file_rows`` rows); ``col-<name>.npy`` (float32 side columns);
``checksums.npy`` (one XXH3-64 checksum per row, of its features, side values and status
byte), all plain ``.npy`` files; and ``locks/``.

Resuming gives the same bytes as an uninterrupted run: the files are preallocated with zeros
when the entry is created, the featurizer writes whole blocks deterministically, and a block's
features, side values and checksums are on disk (fsync) before its status bytes are written, so
a row is never marked done too early. A killed run leaves blocks with PENDING rows, perhaps
partly written; the rerun recomputes those whole blocks and overwrites them with the same bytes.

Sharding never corrupts: a writer claims shard ``i/n`` (blocks ``b % n == i``) and a second
claimant of the same shard is refused. Claims with different ``n`` may overlap; they only waste
work, because every block write holds the entry-wide lock, skips a block already recorded in
full, and would write identical bytes anyway. :meth:`FeatureStore.claim_request` refuses an
identical second run earlier still, before it loads a model.

Damage is never used silently: every read of rows checks each row against its checksum, and a
writer opening an entry checks it cheaply (files, sizes, the small files' SHA-256) and repairs
it: rows it can pinpoint go back to pending and are computed again, anything else is rebuilt.
A killed process's leftovers (a half-built entry folder, a manifest's temporary) are told from
a live one's by the flock their creator holds, and removed by the next writer. Reading a
complete entry needs no write access.
"""

from selectkit.store.entry import FeatureSet
from selectkit.store.integrity import Check, check_entry, repair_entry, verify_entry
from selectkit.store.layout import (
    CHECKSUMS,
    DTYPES,
    ENTRY_FORMAT,
    Layout,
    RowStatus,
    canonical_key,
    key_id,
)
from selectkit.store.problems import BrokenEntry, repair_hint
from selectkit.store.root import FILE_BYTES, FeatureStore, FillRequest

__all__ = [
    "CHECKSUMS",
    "DTYPES",
    "ENTRY_FORMAT",
    "FILE_BYTES",
    "BrokenEntry",
    "Check",
    "FeatureSet",
    "FeatureStore",
    "FillRequest",
    "Layout",
    "RowStatus",
    "canonical_key",
    "check_entry",
    "key_id",
    "repair_entry",
    "repair_hint",
    "verify_entry",
]
