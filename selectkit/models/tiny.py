"""Tiny randomly initialised causal LMs with a byte-level tokenizer, built offline from configs.

For tests, notebooks and benchmarks that need a real transformers model but no download: the
weights come from a seeded initialisation and the tokenizer maps each UTF-8 byte to one token
(no training, so it is the same everywhere), with BOS, EOS, PAD and a chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from selectkit.errors import ParamError

Architecture = Literal["llama", "gpt2"]

SPECIALS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """The shape of a tiny model; ``seed`` fixes its random initial weights."""

    arch: Architecture = "llama"
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    intermediate: int | None = None
    max_positions: int = 512
    seed: int = 0

    @classmethod
    def parse(cls, spec: str) -> TinySpec:
        """``tiny-llama`` or ``tiny-gpt2``, optionally with ``:key=value,...`` overrides,
        e.g. ``tiny-llama:layers=4,hidden=256``."""
        head, _, rest = spec.partition(":")
        arch = head.removeprefix("tiny-")
        if not head.startswith("tiny-") or arch not in ("llama", "gpt2"):
            raise ParamError(f"tiny model spec must start with tiny-llama or tiny-gpt2: '{spec}'")
        fields: dict[str, Any] = {"arch": arch}
        for part in filter(None, rest.split(",")):
            key, sep, value = part.partition("=")
            if not sep or key not in cls.__dataclass_fields__ or key == "arch":
                raise ParamError(f"tiny model spec '{spec}': unknown setting '{part}'")
            try:
                fields[key] = int(value)
            except ValueError:
                raise ParamError(f"tiny model spec '{spec}': {key} must be an integer") from None
        return cls(**fields)


def byte_tokenizer() -> Any:
    """A tokenizer with one token per UTF-8 byte plus the special tokens, and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIALS)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(spec: TinySpec | str = TinySpec(), tokenizer: Any = None) -> tuple[Any, Any]:
    """A freshly initialised tiny causal LM and its byte tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if isinstance(spec, str):
        spec = TinySpec.parse(spec)
    tokenizer = tokenizer if tokenizer is not None else byte_tokenizer()
    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if spec.arch == "llama":
        config = LlamaConfig(
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate or 4 * spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            max_position_embeddings=spec.max_positions,
            tie_word_embeddings=False,
            **common,
        )
    else:
        config = GPT2Config(
            n_embd=spec.hidden,
            n_inner=spec.intermediate,
            n_layer=spec.layers,
            n_head=spec.heads,
            n_positions=spec.max_positions,
            **common,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model, tokenizer
