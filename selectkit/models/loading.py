"""The built-in ``selectkit_load_model`` hook: tiny models, the bundled SmolLM2, local paths and
hub names; :class:`LoadedModel`, which nobody changes in place (adapters are attached only
inside :meth:`LoadedModel.adapted`). :meth:`selectkit.host.Host.load_model` asks the plugins.

The names selectkit ships (``smollm2``, ``tiny-llama[:k=v,...]``, ``tiny-gpt2[:...]``) are
reserved: only first-party plugins are asked for them, so no plugin can answer another model
for them. Any other spec is asked of the plugins first and of the built-in fallback (a local
folder, a hub name) last, so a plugin can add model sources.

transformers and torch are imported inside functions so that the CLI starts fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from selectkit import bundled
from selectkit.bundled import SMOLLM2
from selectkit.data.tokenizers import looks_like_hub_name, remote_code_refused
from selectkit.errors import ParamError
from selectkit.markers import hookimpl

if TYPE_CHECKING:
    import torch

    from selectkit.models.lora import LoraSpec

DTYPES = ("float32", "bfloat16", "float16")
#: The tiny random models built in (``tiny-llama:layers=4`` adds settings).
TINY_MODELS = ("tiny-llama", "tiny-gpt2")
DType = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model: ``device`` is ``auto`` (cuda when available, else cpu), ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps``; ``dtype`` the weights' dtype."""

    device: str = "auto"
    dtype: DType = "float32"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ParamError(f"dtype must be one of {DTYPES}, not '{self.dtype}'")


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM, its tokenizer, and the spec it was loaded from.

    Frozen, because one loaded model serves every method of a session
    (:meth:`~selectkit.host.Host.shared_model`): a method that needs an adapter takes it
    through :meth:`adapted`, which always leaves the model as it found it.

    ``digests`` remembers the digests of its base weights
    (:func:`selectkit.store.fingerprints.tensors_digest`'s ``memo``): the warmup key and every
    feature key of a run hash the same weights, and hashing SmolLM2's takes half a second.
    It is shared with the views :meth:`adapted` gives, and is no part of equality."""

    model: Any
    tokenizer: Any
    spec: str
    digests: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @contextlib.contextmanager
    def adapted(
        self, adapter: LoraSpec | str | Path | None, *, seed: int = 0
    ) -> Iterator[LoadedModel]:
        """This model with ``adapter`` attached for the ``with`` block: a fresh LoRA (a
        :class:`~selectkit.models.lora.LoraSpec`, its A matrices drawn from ``seed``), a saved
        adapter (a checkpoint folder), or none (``None``: the model as it is). The adapter
        comes off however the block ends."""
        if adapter is None:
            yield self
            return
        from selectkit.models.lora import attach_lora, load_adapter, remove_adapter

        if hasattr(self.model, "peft_config"):
            raise RuntimeError(f"model '{self.spec}' already has an adapter attached")
        if isinstance(adapter, str | Path):
            wrapped = load_adapter(self.model, adapter)
        else:
            wrapped = attach_lora(self.model, adapter, seed=seed)
        try:
            yield replace(self, model=wrapped)
        finally:
            remove_adapter(wrapped, self.model)


def resolve_device(device: str) -> torch.device:
    """``auto`` becomes cuda when available, else cpu; an unavailable device is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ParamError(f"unknown device '{device}': {exc}") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(resolved.type, False):
        raise ParamError(f"device '{device}' is not available on this machine")
    return resolved


def torch_dtype(name: str) -> torch.dtype:
    import torch

    if name not in DTYPES:
        raise ParamError(f"dtype must be one of {DTYPES}, not '{name}'")
    return getattr(torch, name)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' "Loading weights" bar off while a model loads: it flashes by in a second
    and says nothing a user can act on."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _from_pretrained(source: str, options: ModelOptions, **extra: Any) -> Any:
    from transformers import AutoModelForCausalLM

    with quiet_loading():
        return AutoModelForCausalLM.from_pretrained(
            source,
            dtype=torch_dtype(options.dtype),
            trust_remote_code=options.trust_remote_code,
            **extra,
        )


def _from_gguf(options: ModelOptions) -> tuple[Any, Any]:
    """The bundled model and tokenizer, read from the GGUF file."""
    from transformers import AutoTokenizer

    folder = bundled.smollm2_directory()
    model = _dequantized(_from_pretrained(folder, options, gguf_file=bundled.SMOLLM2_GGUF))
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=bundled.SMOLLM2_GGUF)


def _dequantized(model: Any) -> Any:
    """A GGUF model as the ordinary model it is after loading.

    transformers dequantizes GGUF weights to ``options.dtype`` on load but keeps the GGUF
    quantization marker, which makes its Trainer refuse to fine-tune the model; every weight is
    already a plain tensor, so the marker is dropped.
    """
    model.is_quantized = False
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def is_reserved_model(spec: str) -> bool:
    """Whether ``spec`` names a model selectkit ships, which only first-party plugins answer."""
    return spec == SMOLLM2 or spec.partition(":")[0] in TINY_MODELS


@hookimpl(trylast=True)
def selectkit_load_model(spec: str, options: ModelOptions) -> LoadedModel | None:
    """``tiny-llama[:k=v,...]`` / ``tiny-gpt2`` (random tiny models), ``smollm2`` (the bundled
    SmolLM2-135M-Instruct), a local folder or a hub name; ``None`` for anything else.

    Called last for an ordinary spec (plugins are asked first) and alone with the other
    first-party plugins for a reserved one (:func:`is_reserved_model`)."""
    if spec.startswith("tiny-"):
        from selectkit.models.tiny import tiny_model

        model, tokenizer = tiny_model(spec)
        return LoadedModel(model.to(torch_dtype(options.dtype)), tokenizer, spec)
    if spec == SMOLLM2:
        model, tokenizer = bundled.load_model(
            options.dtype,
            read_gguf=lambda: _from_gguf(options),
            read_copy=lambda folder: _from_pretrained(str(folder), options),
        )
        return LoadedModel(model, tokenizer, spec)
    path = Path(spec).expanduser()
    if not path.exists() and not looks_like_hub_name(spec):
        return None
    from transformers import AutoTokenizer

    source = str(path) if path.exists() else spec
    try:
        model = _from_pretrained(source, options)
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=options.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        where = f"local path {source}" if path.exists() else "the Hugging Face hub (offline?)"
        refused = remote_code_refused(
            exc, f"model '{spec}' from {where}", "ModelOptions(trust_remote_code=True)"
        )
        if refused is not None:
            raise refused from exc
        raise ParamError(f"cannot load model '{spec}' from {where}: {exc}") from exc
    return LoadedModel(model, tokenizer, spec)


def unknown_model(spec: str) -> ParamError:
    """The error for a model spec no plugin knows."""
    return ParamError(
        f"no model '{spec}': not an existing path, not a hub name, and no plugin knows it "
        f"(built-in names: {SMOLLM2}, {', '.join(TINY_MODELS)})"
    )


def prepared(loaded: LoadedModel, device: torch.device) -> LoadedModel:
    """A loader's model on ``device``, in eval mode, its tokenizer with a padding token."""
    loaded.model.to(device).eval()
    if loaded.tokenizer.pad_token_id is None:
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    return loaded
