"""LoRA layer, injection, initialisers and null-space initialisation on tiny LLaMA models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from callbacks.null_space_calibration import accumulate_second_moments, add_upper_gram, bases_from_moments, symmetrize_upper
from lightning_modules.adapters.initializers import factor_in_subspace, initialize_adapters, null_space_basis
from lightning_modules.adapters.lora import LoRALinear, adapter_state_dict, bypass_uninitialized, inject_lora
from tiny_causal_lm import build_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def calibration_batches(vocab_size: int, batches: int = 4, length: int = 48, seed: int = 1) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    result = []
    for _ in range(batches):
        input_ids = torch.randint(4, vocab_size, (4, length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, length // 2:] = 0  # one padded row
        result.append({"input_ids": input_ids, "attention_mask": attention_mask})
    return result


def null_initialised_model(method: str, dtype: torch.dtype = torch.float32, alpha: float | None = None):
    model = build_model(vocab_size=100, hidden_size=32, layers=2).to(dtype)
    batches = calibration_batches(100)
    adapters = inject_lora(model, TARGETS, rank=4, alpha=alpha)
    accumulator = accumulate_second_moments(model, adapters, batches, torch.device("cpu"), progress=False)
    bases = bases_from_moments(accumulator, adapters)
    initialize_adapters(adapters, method, bases=bases)
    return model, adapters, batches, accumulator


def test_factor_in_subspace_reproduces_projection():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(12, 10, generator=generator)
    basis, _ = torch.linalg.qr(torch.randn(10, 3, generator=generator, dtype=torch.float64))
    A, B = factor_in_subspace(weight, basis, scale=2.0)
    expected = weight.double() @ basis @ basis.t()
    assert torch.allclose(2.0 * (B.double() @ A.double()), expected, atol=1e-5)
    # The rows of A lie in span(basis): projecting them onto the basis changes nothing.
    assert torch.allclose(A.double() @ basis @ basis.t(), A.double(), atol=1e-5)


def test_null_space_basis_picks_smallest_eigenvalues():
    eigenvectors, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    eigenvalues = torch.tensor([5.0, 0.1, 3.0, 0.01, 2.0, 1.0], dtype=torch.float64)
    covariance = eigenvectors @ torch.diag(eigenvalues) @ eigenvectors.t()
    basis, values = null_space_basis(covariance, rank=2)
    assert torch.allclose(values, torch.tensor([0.01, 0.1], dtype=torch.float64))
    expected = eigenvectors[:, [3, 1]]
    assert torch.allclose((basis.t() @ expected).abs(), torch.eye(2, dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_null_space_basis_matches_full_decomposition(dtype):
    generator = torch.Generator().manual_seed(3)
    activations = torch.randn(400, 64, generator=generator, dtype=torch.float64) * torch.logspace(0, -4, 64, dtype=torch.float64)
    covariance = activations.t() @ activations / 400
    basis, values = null_space_basis(covariance, rank=5, dtype=dtype)
    full_values, full_vectors = torch.linalg.eigh(covariance)
    assert basis.dtype == dtype
    assert basis.shape == (64, 5)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    assert torch.allclose(values.double(), full_values[:5], atol=tolerance * full_values[-1])
    assert torch.allclose(basis.double().t() @ basis.double(), torch.eye(5, dtype=torch.float64), atol=1e-5 if dtype == torch.float32 else 1e-10)
    # The captured energy is the minimum up to the working precision times the largest eigenvalue.
    energy = torch.trace(basis.double().t() @ covariance @ basis.double())
    assert energy <= full_values[:5].sum() + 5 * tolerance * full_values[-1]
    if dtype == torch.float64:  # the spectrum's tail lies below float32 resolution
        projector = basis.double() @ basis.double().t()
        expected = full_vectors[:, :5] @ full_vectors[:, :5].t()
        assert torch.dist(projector, expected) < 1e-8


@pytest.mark.parametrize("method", ["lora_null_v1", "lora_null_v2"])
def test_null_init_keeps_logits(method):
    reference = build_model(vocab_size=100, hidden_size=32, layers=2)
    model, _, batches, _ = null_initialised_model(method)
    input_ids = batches[0]["input_ids"]
    with torch.no_grad():
        expected = reference(input_ids).logits
        actual = model(input_ids).logits
    relative = ((actual - expected).norm() / expected.norm()).item()
    assert relative < 1e-4, f"relative logit change {relative:.2e} after {method} initialisation"


def test_null_init_changes_base_weight_but_not_output():
    reference = build_model(vocab_size=100, hidden_size=32, layers=2)
    model, adapters, _, _ = null_initialised_model("lora_null_v1")
    adapter = adapters["model.layers.0.self_attn.q_proj"]
    original = reference.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(adapter.base.weight, original)
    assert torch.allclose(adapter.base.weight + adapter.lora_B @ adapter.lora_A, original, atol=1e-6)


def test_v2_freezes_down_projection():
    _, adapters, _, _ = null_initialised_model("lora_null_v2")
    assert all(not adapter.lora_A.requires_grad for adapter in adapters.values())
    assert all(adapter.lora_B.requires_grad for adapter in adapters.values())


def test_scaled_null_init_keeps_logits():
    reference = build_model(vocab_size=100, hidden_size=32, layers=2)
    model, adapters, batches, _ = null_initialised_model("lora_null_v1", alpha=16)
    assert adapters["model.layers.0.mlp.down_proj"].scale == 4.0
    with torch.no_grad():
        expected = reference(batches[0]["input_ids"]).logits
        actual = model(batches[0]["input_ids"]).logits
    assert ((actual - expected).norm() / expected.norm()).item() < 1e-4


def test_bfloat16_model_keeps_float32_adapters():
    reference = build_model(vocab_size=100, hidden_size=32, layers=2).to(torch.bfloat16)
    model, adapters, batches, _ = null_initialised_model("lora_null_v1", dtype=torch.bfloat16)
    adapter = adapters["model.layers.1.mlp.up_proj"]
    assert adapter.lora_A.dtype == torch.float32
    assert adapter.base.weight.dtype == torch.bfloat16
    with torch.no_grad():
        expected = reference(batches[0]["input_ids"]).logits.float()
        actual = model(batches[0]["input_ids"]).logits.float()
    # bfloat16 keeps about 3 significant digits; the residual base is rounded once to bfloat16.
    assert ((actual - expected).norm() / expected.norm()).item() < 2e-2


def test_adapter_state_dict_rebuilds_model_exactly():
    model, _, batches, _ = null_initialised_model("lora_null_v1")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.01)  # pretend training moved B
    state = adapter_state_dict(model)
    assert state and all(("lora_" in key) or ("init_" in key) for key in state)

    fresh = build_model(vocab_size=100, hidden_size=32, layers=2)
    inject_lora(fresh, TARGETS, rank=4)
    fresh.load_state_dict(state, strict=False)
    for (name, original), (_, rebuilt) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(original, rebuilt), f"{name} differs after loading the adapter state"
    with torch.no_grad():
        assert torch.equal(model(batches[0]["input_ids"]).logits, fresh(batches[0]["input_ids"]).logits)


def test_shared_inputs_use_one_moment():
    _, _, _, accumulator = null_initialised_model("lora_null_v1")
    leader = accumulator.leader_of
    prefix = "model.layers.0."
    assert leader[prefix + "self_attn.k_proj"] == leader[prefix + "self_attn.q_proj"]
    assert leader[prefix + "self_attn.v_proj"] == leader[prefix + "self_attn.q_proj"]
    assert leader[prefix + "mlp.up_proj"] == leader[prefix + "mlp.gate_proj"]
    assert leader[prefix + "self_attn.o_proj"] == prefix + "self_attn.o_proj"
    assert leader[prefix + "mlp.down_proj"] == prefix + "mlp.down_proj"
    assert len(set(leader.values())) == 2 * 4


@pytest.mark.parametrize("n, blocks", [(10, 3), (7, 1), (5, 8)])
def test_blocked_gram_sums_to_the_full_product(n, blocks):
    generator = torch.Generator().manual_seed(n)
    first, second = torch.randn(13, n, generator=generator), torch.randn(6, n, generator=generator)
    total = torch.zeros(n, n)
    add_upper_gram(total, first, blocks)
    add_upper_gram(total, second, blocks)
    expected = first.t() @ first + second.t() @ second
    assert torch.allclose(symmetrize_upper(total), expected, atol=1e-5)


def test_bypass_skips_only_uninitialised_adapters():
    generator = torch.Generator().manual_seed(0)
    fresh = LoRALinear(nn.Linear(6, 5), rank=2)
    trained = LoRALinear(nn.Linear(6, 5), rank=2)
    trained.set_factors(torch.randn(2, 6, generator=generator), torch.randn(5, 2, generator=generator), 1, False)
    with torch.no_grad():
        trained.lora_B.add_(1.0)  # a trained update: the output now differs from the base layer's
    x = torch.randn(3, 6, generator=generator)
    with torch.no_grad():
        expected = trained(x)
        with bypass_uninitialized([fresh, trained]):
            assert fresh.bypass
            assert not trained.bypass
            assert torch.equal(fresh(x), fresh.base(x))
            assert torch.equal(trained(x), expected)
    assert not fresh.bypass


def test_padding_is_excluded_from_moments():
    model = build_model(vocab_size=100, hidden_size=32, layers=1)
    adapters = inject_lora(model, ["o_proj"], rank=2)
    row = torch.randint(4, 100, (1, 10))
    padded = torch.cat([row, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 6)], dim=1).long()
    plain = accumulate_second_moments(model, adapters, [{"input_ids": row, "attention_mask": torch.ones(1, 10).long()}],
                                      torch.device("cpu"), progress=False)
    masked = accumulate_second_moments(model, adapters, [{"input_ids": padded, "attention_mask": mask}],
                                       torch.device("cpu"), progress=False)
    name = "model.layers.0.self_attn.o_proj"
    assert masked.token_count == plain.token_count == 10
    assert torch.allclose(masked.sums[name], plain.sums[name], rtol=1e-4, atol=1e-5)


def test_unknown_target_pattern_names_it():
    model = build_model(vocab_size=100)
    with pytest.raises(ValueError, match=r"'qkv_proj' matches no nn.Linear.*q_proj"):
        inject_lora(model, ["qkv_proj"], rank=2)


def test_rank_above_input_size_names_layer():
    model = build_model(vocab_size=100, hidden_size=32)
    with pytest.raises(ValueError, match=r"q_proj.*rank 64 is invalid.*1 <= rank <= 32"):
        inject_lora(model, ["q_proj"], rank=64)


def test_too_few_calibration_tokens_warns():
    model = build_model(vocab_size=100, hidden_size=32, layers=1)
    adapters = inject_lora(model, ["down_proj"], rank=2)  # input size 64
    batch = {"input_ids": torch.randint(4, 100, (1, 20)), "attention_mask": torch.ones(1, 20).long()}
    accumulator = accumulate_second_moments(model, adapters, [batch], torch.device("cpu"), progress=False)
    with pytest.warns(UserWarning, match=r"20 tokens, fewer than .* input size 64.*null space is arbitrary"):
        bases_from_moments(accumulator, adapters)


def test_plain_lora_layer_starts_at_base_output():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    expected_input = torch.randn(3, 8)
    expected = base(expected_input)
    adapter = LoRALinear(base, rank=2)
    initialize_adapters({"layer": adapter}, "lora")
    assert adapter.lora_A.abs().sum() > 0
    assert torch.equal(adapter.lora_B, torch.zeros(6, 2))
    assert torch.allclose(adapter(expected_input), expected)


def test_null_space_basis_rejects_nan():
    covariance = torch.eye(4, dtype=torch.float64)
    covariance[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        null_space_basis(covariance, rank=2)
