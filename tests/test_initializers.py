"""PiSSA, MiLoRA and CorDA initialisers: chosen directions and exact initial outputs."""

from __future__ import annotations

import pytest
import torch

from callbacks.null_space_calibration import accumulate_second_moments, covariances_from_moments
from lightning_modules.adapters.initializers import INITIALIZERS, get_initializer, initialize_adapters
from lightning_modules.adapters.lora import LoRALinear, inject_lora
from tiny_causal_lm import build_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def matrix_with_known_svd(m: int = 8, n: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, n, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    singular_values = torch.tensor([9.0, 7.0, 5.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    return u, singular_values, v, (u * singular_values) @ v.t()


def adapter_for(weight: torch.Tensor, rank: int, alpha: float | None = None) -> LoRALinear:
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight.float())
    return LoRALinear(linear, rank=rank, alpha=alpha)


@pytest.mark.parametrize(("method", "indices"), [("pissa", [0, 1]), ("milora", [4, 5])])
def test_singular_direction_choice(method, indices):
    u, singular_values, v, weight = matrix_with_known_svd()
    adapter = adapter_for(weight, rank=2, alpha=4.0)  # scale 2
    initialize_adapters({"layer": adapter}, method)
    expected = (u[:, indices] * singular_values[indices]) @ v[:, indices].t()
    product = adapter.scale * adapter.lora_B.double() @ adapter.lora_A.double()
    assert torch.allclose(product, expected, atol=1e-5)
    # The rows of A span exactly the chosen right singular vectors.
    overlap = torch.linalg.svdvals(v[:, indices].t() @ torch.linalg.qr(adapter.lora_A.double().t())[0])
    assert torch.allclose(overlap, torch.ones(2, dtype=torch.float64), atol=1e-6)
    # The residual keeps the other directions.
    residual = adapter.base.weight.double()
    others = [i for i in range(6) if i not in indices]
    assert torch.allclose(residual, (u[:, others] * singular_values[others]) @ v[:, others].t(), atol=1e-5)


def test_corda_takes_minor_covariance_components():
    u, singular_values, v, weight = matrix_with_known_svd()
    generator = torch.Generator().manual_seed(3)
    X = torch.randn(6, 200, generator=generator, dtype=torch.float64) * torch.tensor([10.0, 5, 2, 1, 0.5, 0.1])[:, None]
    covariance = X @ X.t() / 200
    adapter = adapter_for(weight, rank=2)
    initialize_adapters({"layer": adapter}, "corda_kpm", bases={"layer": covariance})
    damped = covariance + 0.01 * covariance.diagonal().mean() * torch.eye(6, dtype=torch.float64)
    cu, cs, cvh = torch.linalg.svd(weight @ damped, full_matrices=False)
    expected = (cu[:, -2:] * cs[-2:]) @ cvh[-2:] @ torch.linalg.inv(damped)
    assert torch.allclose(adapter.lora_B.double() @ adapter.lora_A.double(), expected, atol=1e-4)
    assert torch.allclose(adapter.base.weight.double() + expected, weight, atol=1e-5)


@pytest.mark.parametrize("method", sorted(INITIALIZERS))
def test_every_initializer_keeps_logits(method):
    reference = build_model(vocab_size=100, hidden_size=32, layers=2)
    model = build_model(vocab_size=100, hidden_size=32, layers=2)
    adapters = inject_lora(model, TARGETS, rank=4, alpha=8)
    generator = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(4, 100, (4, 40), generator=generator),
                "attention_mask": torch.ones(4, 40, dtype=torch.long)} for _ in range(3)]
    calibration = None
    if get_initializer(method).calibration == "covariance":
        accumulator = accumulate_second_moments(model, adapters, batches, torch.device("cpu"), progress=False)
        calibration = covariances_from_moments(accumulator, adapters)
    elif get_initializer(method).calibration == "basis":
        from callbacks.null_space_calibration import bases_from_moments

        accumulator = accumulate_second_moments(model, adapters, batches, torch.device("cpu"), progress=False)
        calibration = bases_from_moments(accumulator, adapters)
    initialize_adapters(adapters, method, bases=calibration)
    with torch.no_grad():
        expected = reference(batches[0]["input_ids"]).logits
        actual = model(batches[0]["input_ids"]).logits
    relative = ((actual - expected).norm() / expected.norm()).item()
    assert relative < 1e-4, f"{method}: relative logit change {relative:.2e}"
    assert all(adapter.is_initialized for adapter in adapters.values())


def test_unknown_initializer_lists_choices():
    with pytest.raises(ValueError, match=r"'loftq'.*corda_kpm.*lora_null_v1.*milora.*pissa"):
        get_initializer("loftq")


def test_corda_matches_peft_on_the_same_covariance(tmp_path):
    peft = pytest.importorskip("peft")
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    model = build_model(vocab_size=100, hidden_size=32, layers=2)
    reference = build_model(vocab_size=100, hidden_size=32, layers=2)
    targets = ["q_proj", "down_proj"]
    adapters = inject_lora(model, targets, rank=4, alpha=8)
    generator = torch.Generator().manual_seed(2)
    batches = [{"input_ids": torch.randint(4, 100, (4, 40), generator=generator),
                "attention_mask": torch.ones(4, 40, dtype=torch.long)} for _ in range(3)]
    accumulator = accumulate_second_moments(model, adapters, batches, torch.device("cpu"), progress=False)
    covariances = covariances_from_moments(accumulator, adapters)
    initialize_adapters(adapters, "corda_kpm", bases=covariances)

    # PEFT reads a covariance file instead of running its own hooks, so both sides see one C.
    covariance_file = tmp_path / "covariance.pt"
    torch.save({name: covariance.float() for name, covariance in covariances.items()}, covariance_file)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights="corda",
                             corda_config=CordaConfig(corda_method="kpm", covariance_file=str(covariance_file)))
    preprocess_corda(reference, config)
    reference = peft.get_peft_model(reference, config)
    for name, adapter in adapters.items():
        layer = reference.get_submodule("base_model.model." + name)
        theirs = layer.scaling["default"] * layer.lora_B["default"].weight.double() @ layer.lora_A["default"].weight.double()
        ours = adapter.scale * adapter.init_B.double() @ adapter.init_A.double()
        relative = ((ours - theirs).norm() / theirs.norm()).item()
        assert relative < 1e-3, f"{name}: CorDA delta differs from PEFT's by {relative:.2e} (relative)"


def test_corda_rejects_infinite_covariance():
    _, _, _, weight = matrix_with_known_svd()
    covariance = torch.eye(6, dtype=torch.float64)
    covariance[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        initialize_adapters({"layer": adapter_for(weight, rank=2)}, "corda_kpm", bases={"layer": covariance})
