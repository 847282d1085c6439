"""Per-example gradients: batched (hooks and torch.func) equal a one-example-at-a-time loop."""

from __future__ import annotations

import pytest
import torch

from selectkit.compute.gradient_types import GradientTransform, flatten_moments
from selectkit.compute.gradients import PerExampleGradients, trainable_layout
from selectkit.data.batching import pad_batch
from selectkit.data.examples import tokenize_many
from selectkit.data.pool import Record
from selectkit.errors import ParamError
from selectkit.models.lora import LoraSpec, attach_lora
from selectkit.models.losses import response_losses
from selectkit.models.recompute import decoder_layers
from selectkit.models.tiny import tiny_model

RECORDS = [
    Record(id=str(i), prompt=f"question {i} " * (1 + i % 3), response="answer " * (1 + i))
    for i in range(5)
]


def _lora_model(arch: str = "llama", targets: str | tuple[str, ...] = "all-linear"):
    model, tokenizer = tiny_model(f"tiny-{arch}")
    model = attach_lora(model, LoraSpec(r=4, target_modules=targets))
    with torch.no_grad():  # LoRA starts with B = 0, which would make every A gradient zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model, tokenizer


def _loop_gradients(model, tokenizer, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    rows, losses = [], []
    params = [p for p in model.named_parameters() if p[1].requires_grad]
    for item in tokens:
        batch = pad_batch([item], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"]).logits
        loss = response_losses(logits, batch["labels"])[0]
        grads = torch.autograd.grad(loss, [p for _, p in params])
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
        losses.append(loss.detach())
    return torch.stack(rows), torch.stack(losses)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["hooks", "func"])
def test_batched_gradients_equal_a_loop(arch, method):
    model, tokenizer = _lora_model(arch)
    tokens = tokenize_many(RECORDS, tokenizer)
    grads, losses = PerExampleGradients(model, method=method)(
        pad_batch(tokens, tokenizer.pad_token_id)
    )
    expected, expected_losses = _loop_gradients(model, tokenizer, tokens)
    assert grads.shape == expected.shape
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(grads, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(losses, expected_losses, rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_an_examples_gradient():
    model, tokenizer = _lora_model()
    tokens = tokenize_many(RECORDS, tokenizer)
    engine = PerExampleGradients(model)
    alone, _ = engine(pad_batch(tokens[:1], tokenizer.pad_token_id))
    padded, _ = engine(pad_batch([tokens[0], tokens[-1]], tokenizer.pad_token_id))
    assert len(tokens[-1].input_ids) > len(tokens[0].input_ids) + 10
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-4, atol=1e-6)


def test_loss_is_mean_over_response_tokens_like_hugging_face():
    model, tokenizer = _lora_model()
    (item,) = tokenize_many(RECORDS[:1], tokenizer)
    batch = pad_batch([item], tokenizer.pad_token_id)
    out = model(**batch)
    torch.testing.assert_close(response_losses(out.logits, batch["labels"])[0], out.loss)


def test_named_parameters_use_torch_func():
    model, tokenizer = tiny_model("tiny-llama")
    names = ["model.norm.weight", "model.layers.1.post_attention_layernorm.weight"]
    engine = PerExampleGradients(model, names)
    assert engine.method == "func"
    assert [p.name for p in engine.layout] == [n for n, _ in model.named_parameters() if n in names]
    tokens = tokenize_many(RECORDS, tokenizer)
    grads, _ = engine(pad_batch(tokens, tokenizer.pad_token_id))
    expected, _ = _loop_gradients(model, tokenizer, tokens)
    torch.testing.assert_close(grads, expected, rtol=1e-4, atol=1e-6)


def test_hooks_refuse_parameters_outside_linear_layers():
    model, _ = tiny_model("tiny-llama")
    with pytest.raises(ParamError, match=r"nn\.Linear"):
        PerExampleGradients(model, ["model.norm.weight"], method="hooks")


def test_unknown_or_no_parameters_are_clear_errors():
    model, _ = tiny_model("tiny-llama")
    with pytest.raises(ParamError, match="no parameter named 'nope'"):
        trainable_layout(model, ["nope"])
    for param in model.parameters():
        param.requires_grad_(False)
    with pytest.raises(ParamError, match="no trainable parameters"):
        trainable_layout(model)


def test_an_example_without_response_tokens_is_refused():
    model, tokenizer = _lora_model()
    tokens = tokenize_many(RECORDS[:2], tokenizer)
    batch = pad_batch(tokens, tokenizer.pad_token_id)
    batch["labels"][1] = -100
    with pytest.raises(ParamError, match="no response token"):
        PerExampleGradients(model)(batch)


def test_adam_features_match_a_hand_computation():
    g = torch.tensor([[0.5, -2.0, 0.0]])
    m = torch.tensor([0.1, 0.2, -0.3])
    v = torch.tensor([0.01, 0.04, 0.09])
    got = GradientTransform("adam", exp_avg=m, exp_avg_sq=v)(g)
    m1 = [0.9 * 0.1 + 0.1 * 0.5, 0.9 * 0.2 + 0.1 * -2.0, 0.9 * -0.3]
    v1 = [0.999 * 0.01 + 0.001 * 0.25, 0.999 * 0.04 + 0.001 * 4.0, 0.999 * 0.09]
    expected = torch.tensor([[a / (b + 1e-8) ** 0.5 for a, b in zip(m1, v1, strict=True)]])
    torch.testing.assert_close(got, expected)
    assert torch.equal(GradientTransform("sign")(g), torch.tensor([[1.0, -1.0, 0.0]]))
    assert torch.equal(GradientTransform("sgd")(g), g)


def test_adam_needs_moments_of_the_right_shapes():
    with pytest.raises(ParamError, match="moments"):
        GradientTransform("adam")
    with pytest.raises(ParamError, match="gradient type must be"):
        GradientTransform("adagrad")
    model, _ = _lora_model(targets=("q_proj",))
    layout = PerExampleGradients(model).layout
    moments = {p.name: (torch.zeros(p.shape), torch.ones(p.shape)) for p in layout}
    m, v = flatten_moments(moments, layout)
    assert m.shape == v.shape == (layout[-1].stop,)
    del moments[layout[0].name]
    with pytest.raises(ParamError, match="no moments for parameter"):
        flatten_moments(moments, layout)
    bad = {p.name: (torch.zeros(3), torch.ones(3)) for p in layout}
    with pytest.raises(ParamError, match="shape"):
        flatten_moments(bad, layout)


def _saved_bytes(engine: PerExampleGradients, batch) -> int:
    """The bytes autograd keeps for the backward pass while ``engine`` runs on ``batch``."""
    kept: dict[int, int] = {}

    def pack(tensor):
        kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        engine(batch)
    return sum(kept.values())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_recomputed_activations_give_the_same_bits_and_keep_less(arch):
    model, tokenizer = _lora_model(arch)
    batch = pad_batch(tokenize_many(RECORDS, tokenizer), tokenizer.pad_token_id)
    kept = PerExampleGradients(model, method="hooks")
    again = PerExampleGradients(model, method="hooks", recompute=True)
    grads, losses = kept(batch)
    recomputed, recomputed_losses = again(batch)
    assert torch.equal(recomputed, grads) and torch.equal(recomputed_losses, losses)
    assert all("forward" not in vars(layer) for layer in decoder_layers(model))  # put back
    assert _saved_bytes(again, batch) < _saved_bytes(kept, batch) / 2


def test_recompute_needs_the_hooks_backend():
    model, _ = _lora_model()
    with pytest.raises(ParamError, match="recompute needs per-example gradients by layer hooks"):
        PerExampleGradients(model, method="func", recompute=True)
