"""The parameters of every method that runs the model, as nested groups.

A model-running method's parameters subclass :class:`ModelParams` (the model, its batching, the
``lora`` adapter and the ``warmup`` that makes checkpoints); a gradient method's subclass
:class:`GradientParams`, which adds the ``projection``. Each group is the configuration class
of the step it drives (:class:`~selectkit.models.lora.LoraSpec`,
:class:`~selectkit.train.warmup.WarmupConfig`,
:class:`~selectkit.compute.projectors.ProjectionConfig`), so a default is written once: in that
class. Users write a group's settings with dotted keys, ``-p lora.r=16``, and the commands that
run one step alone take the same settings as options, ``--lora-r 16``.

Every value is checked when the parameters are made (when the command line reads ``-p``), so a
value that cannot work is refused before anything loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal, get_args

from selectkit.compute.gradient_types import GradientKind
from selectkit.compute.projectors import GEN_BLOCK, ProjectionConfig
from selectkit.errors import ParamError
from selectkit.features.featurize import FeaturizeConfig, View
from selectkit.models.loading import DType, ModelOptions
from selectkit.models.lora import LoraSpec
from selectkit.params import help_text
from selectkit.resources import check_memory
from selectkit.seeds import SEED_MAX
from selectkit.train.warmup import WarmupConfig

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def checkpoint_folders(text: str) -> list[Path]:
    """The folders of a comma-separated ``checkpoints`` value."""
    return [Path(part.strip()).expanduser() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class WarmupRuns(WarmupConfig):
    """The built-in warmup of a method run: one warmup's settings, and how many independent
    runs (seeds ``seed``, ``seed+1``, ...) to make, each on its own random subset; the
    checkpoints of all of them are used (TRAK's ensemble of models). ``seed`` is not the
    selection's ``--seed``, so selecting again with another seed reuses the warmup."""

    runs: int = field(default=1, metadata=help_text("independent warmup runs (an ensemble)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.runs < 1:
            raise ParamError(f"warmup.runs must be at least 1, got {self.runs}")
        if self.seed + self.runs - 1 > SEED_MAX:
            raise ParamError(
                f"warmup.seed must be in 0..{SEED_MAX - self.runs + 1} (one seed per warmup "
                f"run), got {self.seed}"
            )

    def run(self, index: int) -> WarmupConfig:
        """The configuration of run ``index`` (its own seed)."""
        values = {name: getattr(self, name) for name in WarmupConfig.__dataclass_fields__}
        return WarmupConfig(**{**values, "seed": self.seed + index})


@dataclass(frozen=True)
class ModelParams:
    """Parameters of every method that runs the model: which model and where, how examples
    are batched, the LoRA adapter (the warmup's, and the fresh one scored when there are no
    checkpoints) and the warmup. Methods that need no projected gradients (EL2N, IFD)
    subclass this; the gradient methods subclass :class:`GradientParams`."""

    model: str = field(
        default="smollm2",
        metadata=help_text("model folder, hub name, or built-in name (smollm2, tiny-llama)"),
    )
    checkpoints: str = field(
        default="",
        metadata=help_text(
            "comma-separated warmup run or adapter checkpoint folders; empty: run (or reuse) "
            "a cached LoRA warmup on the pool"
        ),
    )
    batch_size: int = field(
        default=16, metadata=help_text("examples per forward (and backward) pass")
    )
    max_length: int = field(
        default=512, metadata=help_text("tokens per example (prompt cut first)")
    )
    device: str = field(
        default=ModelOptions.device, metadata=help_text("auto, cpu, cuda, cuda:N or mps")
    )
    model_dtype: DType = field(
        default=ModelOptions.dtype, metadata=help_text("dtype of the model's weights")
    )
    lora: LoraSpec = field(default_factory=LoraSpec)
    warmup: WarmupRuns = field(default_factory=WarmupRuns)

    #: What the settings were called before they were grouped (selectkit 0.1's flat names,
    #: still in older run files and manifests), so an error can name the new key.
    former_names: ClassVar[dict[str, str]] = {
        "lora_r": "lora.r",
        "lora_alpha": "lora.alpha",
        "lora_targets": "lora.target_modules",
        "warmup_fraction": "warmup.fraction",
        "warmup_epochs": "warmup.epochs",
        "warmup_lr": "warmup.learning_rate",
        "warmup_batch_size": "warmup.batch_size",
        "warmup_runs": "warmup.runs",
        "warmup_seed": "warmup.seed",
        "projector": "projection.kind",
        "dim": "projection.dim",
        "projection_seed": "projection.seed",
        "store_dtype": "projection.dtype",
    }

    def __post_init__(self) -> None:
        checks = [
            (
                bool(self.model.strip()),
                "model must name a model: a folder, a hub name, smollm2 or tiny-llama",
            ),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.max_length >= 2,
                f"max_length must be >= 2 tokens (a causal LM predicts each token from the "
                f"ones before it, so one token leaves nothing to learn), got {self.max_length}",
            ),
            (
                bool(_DEVICE.fullmatch(self.device)),
                f"device must be auto, cpu, cuda, cuda:N or mps, got '{self.device}'",
            ),
            (
                self.model_dtype in get_args(DType),
                f"model_dtype must be one of {list(get_args(DType))}, got '{self.model_dtype}'",
            ),
            (
                not self.checkpoints or self.warmup.runs == 1,
                "warmup.runs applies to the built-in warmup; with checkpoints given, list "
                "the folders of every run in checkpoints",
            ),
            (
                not self.checkpoints or bool(checkpoint_folders(self.checkpoints)),
                f"checkpoints must list folders, got '{self.checkpoints}'",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ParamError(message)

    def model_settings(self) -> ModelParams:
        """These settings as plain :class:`ModelParams`: what decides a pass over the model
        (model, checkpoints or warmup, adapter, batching), whatever the method."""
        return ModelParams(**{f.name: getattr(self, f.name) for f in fields(ModelParams)})


@dataclass(frozen=True)
class PoolView:
    """A view of the pool a gradient method reads from the store: the pass that makes it (its
    model settings) and the view (gradient type and projection). A run that will run several
    methods gives each method's pipeline all of theirs (``Context.views``), so one pass
    stores every view that pass can make."""

    settings: ModelParams
    view: View


#: The featurizer's setting, offered to the gradient methods as it is.
_RECOMPUTE = next(f for f in fields(FeaturizeConfig) if f.name == "recompute")


@dataclass(frozen=True)
class GradientParams(ModelParams):
    """Parameters every gradient method shares: the model's, plus the projection of the
    gradients and the store's row type. Gradient methods' parameter classes subclass this."""

    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    recompute: bool = field(default=_RECOMPUTE.default, metadata=_RECOMPUTE.metadata)

    def pool_view(self, gradient: GradientKind) -> PoolView:
        """The pool view a method with these parameters reads: ``gradient`` features under
        this projection, from this pass."""
        return PoolView(self.model_settings(), View(gradient, self.projection))

    def __post_init__(self) -> None:
        super().__post_init__()
        dim = self.projection.dim
        if self.projection.kind == "rademacher":  # a dense projector holds a matrix block
            check_memory(
                GEN_BLOCK * dim * 4,
                f"projection.dim={dim} with the dense projector rademacher",
                "lower projection.dim (LESS uses 8192), or use projection.kind=sjlt",
            )


CheckpointsUsed = Literal["last", "all"]


@dataclass(frozen=True)
class RowParams(GradientParams):
    """Parameters of gradient methods that hold the pool's feature rows in memory (CRAIG,
    k-center, GRAD-MATCH): which checkpoints' rows, and how much memory a pass may take."""

    checkpoints_used: CheckpointsUsed = field(
        default="last",
        metadata=help_text(
            "last: gradients at the last warmup checkpoint (the paper's current model); "
            "all: every checkpoint side by side, scaled by sqrt(learning rate)"
        ),
    )
    memory_mb: int = field(default=256, metadata=help_text("MiB of rows or similarities at once"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.checkpoints_used not in get_args(CheckpointsUsed):
            raise ParamError(f"checkpoints_used must be last or all, not '{self.checkpoints_used}'")
        if self.memory_mb < 1:
            raise ParamError(f"memory_mb must be >= 1, got {self.memory_mb}")
