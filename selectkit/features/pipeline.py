"""What every gradient method runs before it scores: model, warmup checkpoints, features.

A gradient method's parameters subclass :class:`GradientParams` (a method that runs the model
but needs no projected gradients, :class:`ModelParams`); its ``objective`` builds a
:class:`GradientPipeline` and asks it for checkpoints (given, or a LoRA warmup run that is
cached by content like the features) and for feature sets of the pool and target. Everything
lands in the shared store, so a second method, or the same method with another target, reuses
the warmup and the pool's features and only computes what is new.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selectkit.errors import ParamError
from selectkit.features import locks
from selectkit.features.featurize import FeaturizeConfig, featurize, tokenize_pool
from selectkit.features.fingerprints import tensors_digest, tokenizer_digest
from selectkit.features.gradient_types import GradientKind
from selectkit.features.store import FeatureSet, FeatureStore, default_root
from selectkit.models.lora import LoraSpec

if TYPE_CHECKING:
    from selectkit.data.pool import Pool
    from selectkit.host import Host
    from selectkit.methods import Context
    from selectkit.models.loading import LoadedModel


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class ModelParams:
    """Parameters of every method that runs the model: which model, its warmup and adapter,
    and how examples are batched. Methods that need no projected gradients (EL2N, IFD)
    subclass this; the gradient methods subclass :class:`GradientParams`."""

    model: str = field(
        default="smollm2",
        metadata=_help("model folder, hub name, or built-in name (smollm2, tiny-llama)"),
    )
    checkpoints: str = field(
        default="",
        metadata=_help(
            "comma-separated warmup run or adapter checkpoint folders; empty: run (or reuse) "
            "a cached LoRA warmup on the pool"
        ),
    )
    warmup_fraction: float = field(default=0.05, metadata=_help("warmup: share of the pool"))
    warmup_epochs: int = field(default=4, metadata=_help("warmup: epochs, one checkpoint each"))
    warmup_lr: float = field(default=2e-5, metadata=_help("warmup: peak learning rate"))
    warmup_batch_size: int = field(default=8, metadata=_help("warmup: examples per step"))
    warmup_runs: int = field(
        default=1,
        metadata=_help(
            "independent warmups (seeds seed, seed+1, ...), each on its own random subset; "
            "the checkpoints of all of them are used (TRAK's ensemble of models)"
        ),
    )
    lora_r: int = field(default=8, metadata=_help("rank of the warmup LoRA adapter"))
    lora_alpha: float = field(default=32.0, metadata=_help("alpha of the warmup LoRA adapter"))
    lora_targets: str = field(
        default="q_proj,k_proj,v_proj,o_proj",
        metadata=_help("module names the LoRA adapts, or all-linear"),
    )
    batch_size: int = field(default=16, metadata=_help("examples per forward (and backward) pass"))
    max_length: int = field(default=512, metadata=_help("tokens per example (prompt cut first)"))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda, cuda:N or mps"))
    model_dtype: str = field(default="float32", metadata=_help("float32, bfloat16 or float16"))
    cache_dir: str = field(
        default="",
        metadata=_help("feature store folder, warmups beside it (default: SELECTKIT_CACHE_DIR)"),
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_length < 1:
            raise ParamError("batch_size and max_length must be positive")
        if self.warmup_runs < 1:
            raise ParamError(f"warmup_runs must be at least 1, got {self.warmup_runs}")
        if self.checkpoints and self.warmup_runs != 1:
            raise ParamError(
                "warmup_runs applies to the built-in warmup; with checkpoints given, list the "
                "folders of every run in checkpoints"
            )

    def lora(self) -> LoraSpec:
        targets = self.lora_targets
        return LoraSpec(
            r=self.lora_r,
            alpha=self.lora_alpha,
            target_modules=targets if targets == "all-linear" else tuple(targets.split(",")),
        )


@dataclass(frozen=True)
class GradientParams(ModelParams):
    """Parameters every gradient method shares: the model's, plus the projection and the
    store's row type. Gradient methods' parameter classes subclass this."""

    projector: str = field(default="sjlt", metadata=_help("random projector (sjlt, rademacher)"))
    dim: int = field(default=8192, metadata=_help("projected gradient dimension (LESS: 8192)"))
    store_dtype: str = field(default="float32", metadata=_help("float32 or float16 rows"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1:
            raise ParamError(f"dim must be positive, got {self.dim}")


class GradientPipeline:
    """Loads the model once and hands out checkpoints and feature sets for a method run.

    With :class:`ModelParams` it gives the model and checkpoints; feature sets need
    :class:`GradientParams`."""

    def __init__(self, params: ModelParams, context: Context, host: Host | None = None):
        self.params = params
        self.context = context
        self.host = host
        self.store = FeatureStore(params.cache_dir or None)

    @cached_property
    def loaded(self) -> LoadedModel:
        p = self.params
        return _load_model(p.model, p.device, p.model_dtype, self.host)

    def check_examples(self, *pools: Pool) -> None:
        """Tokenize every pool now, so an unusable record (no response token left) fails
        naming its file and line before any warmup or extraction."""
        config = FeaturizeConfig(max_length=self.params.max_length)
        for pool in pools:
            if len(pool) == 0:
                raise ParamError("a pool or target set is empty: there is nothing to score")
            tokenize_pool(pool, self.loaded.tokenizer, config)

    def checkpoints(self, pool: Pool) -> list[Path]:
        """The given checkpoint folders, or those of ``warmup_runs`` warmup runs on ``pool``
        (each reused when a run with the same model, pool, settings and seed is in the cache)."""
        from selectkit.train.checkpoints import find_checkpoints

        if self.params.checkpoints:
            folders = [Path(p.strip()) for p in self.params.checkpoints.split(",") if p.strip()]
            missing = [str(p) for p in folders if not p.is_dir()]
            if missing:
                raise ParamError(f"checkpoint folder {missing[0]} does not exist")
            found = [c for folder in folders for c in find_checkpoints(folder)]
        else:
            seed = self.context.seed
            runs = range(seed, seed + self.params.warmup_runs)
            found = [c for run_seed in runs for c in self._warmup(pool, run_seed)]
        if found and all(c.learning_rate == 0 for c in found):
            raise ParamError(
                "every checkpoint's mean learning rate is 0, so learning-rate-weighted scores "
                "would all be 0 (a warmup of one step spends it at learning rate 0); warm up "
                "longer (warmup_fraction, warmup_epochs)"
            )
        return [c.path for c in found]

    def _warmup(self, pool: Pool, seed: int) -> list[Any]:
        from selectkit.train.checkpoints import find_checkpoints
        from selectkit.train.warmup import WarmupConfig, warmup

        p = self.params
        config = WarmupConfig(
            fraction=p.warmup_fraction,
            epochs=p.warmup_epochs,
            learning_rate=p.warmup_lr,
            batch_size=p.warmup_batch_size,
            lora=p.lora(),
            max_length=p.max_length,
            seed=seed,
        )
        identity = {
            "weights": tensors_digest(self.loaded.model.named_parameters()),
            "tokenizer": tokenizer_digest(self.loaded.tokenizer),
            "pool": pool.content_fingerprint,
            "config": config.to_dict(),
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        root = self._warmup_root()
        out = root / digest[:24]
        root.mkdir(parents=True, exist_ok=True)
        with locks.exclusive(root / f"{digest[:24]}.lock"):
            manifest = out / "warmup.json"
            if manifest.is_file():
                if json.loads(manifest.read_text()).get("status") == "complete":
                    return find_checkpoints(out)
                # A run of this very warmup that stopped part-way: the folder is only a cache.
                shutil.rmtree(out)
            return warmup(
                pool,
                self.loaded.model,
                self.loaded.tokenizer,
                out,
                config,
                progress=self.context.progress,
            )

    def _warmup_root(self) -> Path:
        root = Path(self.params.cache_dir) if self.params.cache_dir else default_root()
        return root.parent / "warmup" if root.name == "features" else root / "warmup"

    def features(
        self, pool: Pool, gradient: GradientKind, checkpoints: list[Path]
    ) -> list[FeatureSet]:
        """One feature set of ``pool`` per checkpoint (a fresh LoRA when there is none)."""
        p = self.params
        if not isinstance(p, GradientParams):
            raise TypeError(f"feature sets need GradientParams, not {type(p).__name__}")
        config = FeaturizeConfig(
            gradient=gradient,
            projector=p.projector,
            dim=p.dim,
            seed=self.context.seed,
            dtype=p.store_dtype,  # type: ignore[arg-type]
            batch_size=p.batch_size,
            max_length=p.max_length,
        )
        return featurize(
            pool,
            self.loaded,
            checkpoints=checkpoints,
            lora=p.lora(),
            config=config,
            store=self.store,
            progress=self.context.progress,
            host=self.host,
        )

    def pool_and_target_features(
        self, pool: Pool, target: Pool, pool_gradient: GradientKind = "sgd"
    ) -> tuple[list[FeatureSet], list[FeatureSet]]:
        """What a target-driven method scores: ``pool_gradient`` features of the pool and SGD
        features of the target at the same checkpoints, every record checked first and the
        pairs checked to come from the same model states and projection."""
        self.check_examples(pool, target)
        checkpoints = self.checkpoints(pool)
        pool_sets = self.features(pool, pool_gradient, checkpoints)
        target_sets = self.features(target, "sgd", checkpoints)
        check_pairs(pool_sets, target_sets)
        return pool_sets, target_sets


@functools.lru_cache(maxsize=1)
def _load_model(spec: str, device: str, dtype: str, host: Host | None) -> LoadedModel:
    """The model of the last gradient method run in this process, kept for the next one: a
    notebook or the demo comparing methods loads it once. Methods leave it as they found it
    (adapters are removed after use; warmup and fine-tuning train copies)."""
    from selectkit.models.loading import ModelOptions, load_model

    return load_model(spec, ModelOptions(device=device, dtype=dtype), host=host)  # type: ignore[arg-type]


def learning_rates(feature_sets: list[FeatureSet]) -> list[float]:
    """Each set's checkpoint learning rate (LESS's and TracIn's checkpoint weights); 1 for a
    set made without a checkpoint."""
    rates = []
    for entry in feature_sets:
        rate = (entry.meta.get("checkpoint") or {}).get("learning_rate")
        rates.append(float(rate) if rate is not None else 1.0)
    return rates


def check_pairs(pool_sets: list[FeatureSet], target_sets: list[FeatureSet]) -> None:
    """Pool and target features must come from the same model states and projection; say which
    checkpoint differs, and how, before any scoring."""
    if len(pool_sets) != len(target_sets):
        raise ParamError(
            f"{len(pool_sets)} pool feature sets but {len(target_sets)} target sets: they must "
            "come from the same checkpoints"
        )
    for index, (a, b) in enumerate(zip(pool_sets, target_sets, strict=True)):
        for name in ("base_weights", "trained_weights", "projector", "compute_dtype"):
            if a.key.get(name) != b.key.get(name):
                raise ParamError(
                    f"checkpoint {index}: pool and target features differ in {name} "
                    f"({a.key.get(name)} vs {b.key.get(name)}); extract both with the same "
                    "model, adapter and projector"
                )
