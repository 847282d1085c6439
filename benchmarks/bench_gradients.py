"""Extraction benchmark: per-example LoRA gradients projected to 8192 dims, written to the store.

Model (default): a Llama-shaped model with 4 layers, hidden 256, intermediate 1024, LoRA r=8 on
every linear layer (q, k, v, o, gate, up, down), examples truncated to 128 tokens. ``--smollm2``
runs the bundled SmolLM2-135M-Instruct instead (LoRA r=8 on q, k, v, o; a few dozen examples).

Measured in one run, as ratios (this machine is noisy):

- selectkit: ``Featurizer.run`` end to end (tokenize, batched per-example gradients by layer
  hooks, sparse JL projection, store writes), examples/s;
- the reference path of the LESS code: one forward+backward per example, gradients collected and
  projected every 16 examples by TRAK's ``BasicProjector`` at the same dimension; target:
  selectkit >= 20x faster;
- the floor: a plain batched forward+backward of the same batches with no per-example work;
  target: selectkit <= 2x the floor's time;
- fidelity: Spearman of pairwise cosines of the stored (projected) rows against the exact
  per-example gradients; target >= 0.95 at 8192 dims;
- logits only at response positions: the same extraction with the model's full logits (the
  path before it, forced by hiding ``logits_to_keep``), timed in the same alternation; and the
  peak memory of extracting one block of ``--batch-size`` examples of ``--memory-length``
  tokens both ways, each in a fresh process (RSS high-water mark on the CPU, the CUDA
  allocator's peak on a GPU; on the CPU also with glibc's mmap threshold fixed, which returns
  freed blocks to the system at once); target: <= half of full;
- recomputed activations (``recompute``: each decoder layer keeps only its input and runs again
  in the backward pass): its time against the default in the same alternation, its features
  checked bit-identical, and its peak memory of one block against full logits.

Run: ``python benchmarks/bench_gradients.py [--examples 128] [--reference-examples 32]
[--smollm2] [--device cpu|cuda] [--dtype float32|bfloat16] [--memory-length 256]``. Reports
figures beside targets with PASS or MISS; always exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import peak_memory
import torch

from selectkit.api import load_model
from selectkit.compute.projectors import ProjectionConfig, TrakProjector
from selectkit.data.batching import pad_batch
from selectkit.data.pool import Pool, Record
from selectkit.data.synthetic import make_records
from selectkit.features.featurize import FeaturizeConfig, Featurizer, block_order, tokenize_pool
from selectkit.host import get_host
from selectkit.models.loading import ModelOptions
from selectkit.models.lora import LoraSpec, attach_lora
from selectkit.models.losses import next_token_losses, response_logits, response_losses
from selectkit.store import FeatureStore

SPEEDUP_TARGET = 20.0
FLOOR_TARGET = 2.0
FIDELITY_TARGET = 0.95
MEMORY_TARGET = 0.5
DIM = 8192


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def long_records(n: int, seed: int, repeats: int = 3) -> Pool:
    """Generated instruction records, four joined per example, the responses ``repeats`` times
    over, so each fills 128 tokens (256 with ``repeats=8``)."""
    rows = make_records(-(-4 * n // 10), seed=seed)
    records = []
    for i in range(n):
        group = rows[4 * i : 4 * i + 4]
        prompt = " ".join(f"{r['instruction']} {r['input']}" for r in group)
        response = " ".join(r["output"] for r in group) * repeats
        records.append(Record(id=str(i), prompt=prompt, response=response))
    return Pool(records)


@contextlib.contextmanager
def full_logits() -> Iterator[None]:
    """The extraction as it was before logits were kept only at response positions: every
    model is treated as one without ``logits_to_keep``."""
    import selectkit.compute.gradients as gradients
    import selectkit.models.losses as losses

    saved = losses.takes_logits_to_keep
    losses.takes_logits_to_keep = gradients.takes_logits_to_keep = lambda model: False
    try:
        yield
    finally:
        losses.takes_logits_to_keep = gradients.takes_logits_to_keep = saved


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def pairwise_cosines(rows: np.ndarray) -> np.ndarray:
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    c = unit @ unit.T
    return c[np.triu_indices(len(c), k=1)]


def batches(featurizer: Featurizer, pool: Pool, config: FeaturizeConfig):
    """The padded batches the featurizer processes, in its block order."""
    tokens = tokenize_pool(pool, featurizer.loaded.tokenizer, config)
    order = block_order(tokens)
    pad = featurizer.loaded.tokenizer.pad_token_id
    device = featurizer.grads.device
    for start in range(0, len(order), config.batch_size):
        batch = pad_batch([tokens[i] for i in order[start : start + config.batch_size]], pad)
        yield {k: v.to(device) for k, v in batch.items()}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def floor_seconds(featurizer: Featurizer, pool: Pool, config: FeaturizeConfig) -> float:
    """A plain batched forward+backward (mean loss, logits at response positions) over the
    same batches."""
    model = featurizer.loaded.model
    params = [p for p in model.parameters() if p.requires_grad]
    started = time.perf_counter()
    for batch in batches(featurizer, pool, config):
        logits, next_labels = response_logits(
            model,
            batch["input_ids"],
            batch["labels"],
            attention_mask=batch["attention_mask"],
            use_cache=False,  # as the extraction: a KV cache costs time and nobody reads it
        )
        loss = next_token_losses(logits, next_labels).mean()
        torch.autograd.grad(loss, params)
    synchronize(featurizer.grads.device)
    return time.perf_counter() - started


def reference_seconds(
    featurizer: Featurizer, pool: Pool, config: FeaturizeConfig
) -> tuple[float, float]:
    """LESS's path: one backward per example, projected every 16 by TRAK's BasicProjector.
    Returns the total seconds and the part spent projecting."""
    model = featurizer.loaded.model
    params = [p for p in model.parameters() if p.requires_grad]
    projector = TrakProjector(
        featurizer.grads.dim,
        config.projection.dim,
        config.projection.seed,
        device=featurizer.grads.device,
    )
    pad = featurizer.loaded.tokenizer.pad_token_id
    tokens = tokenize_pool(pool, featurizer.loaded.tokenizer, config)
    projecting = 0.0

    def project(collected: list[torch.Tensor]) -> None:
        nonlocal projecting
        started = time.perf_counter()
        projector.project(torch.stack(collected))
        synchronize(featurizer.grads.device)
        projecting += time.perf_counter() - started

    started = time.perf_counter()
    collected = []
    for item in tokens:
        batch = {k: v.to(featurizer.grads.device) for k, v in pad_batch([item], pad).items()}
        logits = model(input_ids=batch["input_ids"]).logits
        loss = response_losses(logits, batch["labels"])[0]
        grads = torch.autograd.grad(loss, params)
        collected.append(torch.cat([g.reshape(-1) for g in grads]))
        if len(collected) == 16:
            project(collected)
            collected = []
    if collected:
        project(collected)
    synchronize(featurizer.grads.device)
    return time.perf_counter() - started, projecting


def exact_gradients(featurizer: Featurizer, pool: Pool, config: FeaturizeConfig) -> np.ndarray:
    tokens = tokenize_pool(pool, featurizer.loaded.tokenizer, config)
    pad = featurizer.loaded.tokenizer.pad_token_id
    rows = [featurizer.grads(pad_batch([t], pad))[0][0] for t in tokens]
    return torch.stack(rows).double().cpu().numpy()


def prepared(args: argparse.Namespace) -> tuple[str, LoraSpec, object]:
    """The benchmark's model with a LoRA adapter whose B is not zero (a trained adapter's is
    not; a fresh one would zero A's gradients)."""
    if args.smollm2:
        spec, lora = "smollm2", LoraSpec(r=8)
    else:
        spec = "tiny-llama:layers=4,hidden=256,intermediate=1024"
        lora = LoraSpec(r=8, target_modules="all-linear")
    loaded = load_model(spec, ModelOptions(device=args.device, dtype=args.dtype))
    loaded = dataclasses.replace(loaded, model=attach_lora(loaded.model, lora, seed=0))
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if "lora_B" in name:
                noise = torch.empty(param.shape).normal_(
                    0, 0.02, generator=torch.Generator().manual_seed(0)
                )
                param.copy_(noise)
    return spec, lora, loaded


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: the peak memory of extracting one block, printed as JSON."""
    _, _, loaded = prepared(args)
    config = FeaturizeConfig(
        projection=ProjectionConfig(dim=DIM), batch_size=args.batch_size,
        max_length=args.memory_length, recompute=args.memory_child == "recompute",
    )  # fmt: skip
    pool = long_records(args.batch_size, seed=1, repeats=8)
    warm = Pool(list(long_records(2, seed=2)))
    with tempfile.TemporaryDirectory() as root:
        mode = full_logits() if args.memory_child == "full" else contextlib.nullcontext()
        with mode:
            Featurizer(loaded, config, store=FeatureStore(Path(root) / "w"), host=get_host()).run(
                warm, progress=False
            )  # allocator and BLAS start-up are not the block's memory
            cuda = args.device.startswith("cuda")
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            baseline = peak_memory.start()
            featurizer = Featurizer(loaded, config, store=FeatureStore(root), host=get_host())
            featurizer.run(pool, progress=False)
            grown = (
                torch.cuda.max_memory_allocated() - before if cuda else peak_memory.growth(baseline)
            )
    tokens = tokenize_pool(pool, loaded.tokenizer, config)
    print(json.dumps({"bytes": grown, "tokens": max(len(t.input_ids) for t in tokens)}))


def memory_figure(args: argparse.Namespace) -> None:
    """Peak memory of one block with logits kept at response positions (and with recomputed
    activations too), against full logits."""
    cuda = args.device.startswith("cuda")
    # glibc keeps large freed blocks resident once its mmap threshold has adapted upwards; a
    # fixed threshold returns them at once, so the RSS peak follows the live tensors.
    allocators = [("", {})] if cuda else [
        ("glibc's default malloc", {}),
        ("MALLOC_MMAP_THRESHOLD_=131072", {"MALLOC_MMAP_THRESHOLD_": "131072"}),
    ]  # fmt: skip
    where = "CUDA allocator peak" if cuda else "RSS high-water mark"
    for allocator, env in allocators:
        found = {}
        for mode in ("kept", "recompute", "full"):
            command = [sys.executable, __file__, *sys.argv[1:], "--memory-child", mode]
            result = subprocess.run(
                command, capture_output=True, text=True, check=True, env={**os.environ, **env}
            )
            found[mode] = json.loads(result.stdout.strip().splitlines()[-1])
        full = found["full"]["bytes"]
        print(
            f"peak memory, one block of {args.batch_size} x {found['kept']['tokens']} tokens "
            f"({where}{', ' + allocator if allocator else ''}): full logits {full / 2**30:.2f} GB"
        )
        for mode, name in (("kept", "kept logits"), ("recompute", "kept logits + recompute")):
            ratio = found[mode]["bytes"] / full
            print(
                f"  {name:24s}{found[mode]['bytes'] / 2**30:6.2f} GB  {ratio:.2f}x   "
                f"target <= {MEMORY_TARGET:g}x  {verdict(ratio <= MEMORY_TARGET)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument(
        "--reference-examples",
        type=int,
        default=32,
        help="a multiple of 16: the reference projects 16 gradients per TRAK call, as LESS does",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--memory-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smollm2", action="store_true", help="Use SmolLM2-135M-Instruct.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16)")
    parser.add_argument("--projector", default="sjlt", help="our projection kind")
    parser.add_argument(
        "--memory-child", choices=["kept", "recompute", "full"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    spec, lora, loaded = prepared(args)
    config = FeaturizeConfig(
        projection=ProjectionConfig(kind=args.projector, dim=DIM),
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    pool = long_records(args.examples, seed=0)
    small = Pool(list(pool)[: args.reference_examples])
    with tempfile.TemporaryDirectory() as root:
        featurizer = Featurizer(loaded, config, store=FeatureStore(root), host=get_host())
        tokens = tokenize_pool(pool, loaded.tokenizer, config)
        mean_len = np.mean([len(t.input_ids) for t in tokens])
        print(
            f"model {spec} ({args.dtype} on {args.device}), LoRA r={lora.r} on "
            f"{lora.target_modules}, gradient dim {featurizer.grads.dim:,}, {args.examples} "
            f"examples of {mean_len:.0f} tokens, batch {args.batch_size}, d={DIM} "
            f"({args.projector}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"median of {args.repeats} alternating runs"
        )
        floor_seconds(featurizer, small, config)  # warm-up
        ours_runs, full_runs, recompute_runs, floor_runs = [], [], [], []
        recomputed = dataclasses.replace(config, recompute=True)
        modes = (  # context managers made afresh for each run
            (ours_runs, contextlib.nullcontext, config),
            (full_runs, full_logits, config),
            (recompute_runs, contextlib.nullcontext, recomputed),
        )
        for rep in range(args.repeats):
            for runs, mode, settings in modes:
                store = FeatureStore(Path(root) / f"run-{rep}-{len(runs)}-{id(runs)}")
                with mode():
                    fresh = Featurizer(loaded, settings, store=store, host=get_host())
                    started = time.perf_counter()
                    (entry,) = fresh.run(pool, progress=False)
                    runs.append(time.perf_counter() - started)
                if runs is ours_runs:
                    features = entry
                elif runs is recompute_runs:
                    same = np.array_equal(entry.read(0, len(pool)), features.read(0, len(pool)))
            floor_runs.append(floor_seconds(featurizer, pool, config))
        ours, floor = statistics.median(ours_runs), statistics.median(floor_runs)
        full = statistics.median(full_runs)
        again = statistics.median(recompute_runs)
        reference, projecting = reference_seconds(featurizer, small, config)
        ours_rate = args.examples / ours
        ref_rate = len(small) / reference
        print(f"selectkit extraction   {ours:8.2f} s  {ours_rate:8.2f} examples/s")
        print(
            f"  with full logits     {full:8.2f} s  {args.examples / full:8.2f} examples/s "
            f"(kept logits: {ours / full:.2f}x the time)"
        )
        print(
            f"  with recompute       {again:8.2f} s  {args.examples / again:8.2f} examples/s "
            f"({again / ours:.2f}x the time; features {'bit-identical' if same else 'DIFFER'})"
        )
        print(f"batched fwd+bwd floor  {floor:8.2f} s  {args.examples / floor:8.2f} examples/s")
        print(
            f"reference (loop+TRAK)  {reference:8.2f} s  {ref_rate:8.2f} examples/s "
            f"({len(small)} examples; {projecting:.1f} s of it in TRAK's projector)"
        )
        speedup = ours_rate / ref_rate
        print(
            f"speed-up vs reference  {speedup:8.1f}x   target >= {SPEEDUP_TARGET:g}x  "
            f"{verdict(speedup >= SPEEDUP_TARGET)}"
        )
        ratio = ours / floor
        print(
            f"time vs floor          {ratio:8.2f}x   target <= {FLOOR_TARGET:g}x   "
            f"{verdict(ratio <= FLOOR_TARGET)}"
        )
        fidelity_pool = Pool(list(pool)[:64])
        exact = exact_gradients(featurizer, fidelity_pool, config)
        stored = features.read(0, len(fidelity_pool)).astype(np.float64)
        rho = spearman(pairwise_cosines(exact), pairwise_cosines(stored))
        print(
            f"fidelity (Spearman)    {rho:8.4f}    target >= {FIDELITY_TARGET}   "
            f"{verdict(rho >= FIDELITY_TARGET)}  (cosines of {len(fidelity_pool)} examples)"
        )
    memory_figure(args)


if __name__ == "__main__":
    main()
