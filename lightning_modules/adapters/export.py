"""Export trained adapters as a standard PEFT LoRA adapter or as a merged Hugging Face model.

The trained layer computes ``W_res x + s B A x`` with ``W_res = W - s B0 A0``, so its change
against the unmodified pre-trained weight ``W`` is ``s (B A - B0 A0)``. A PEFT adapter for
``W`` must hold that delta:

- plain LoRA (``B0 = 0``): ``A`` and ``B`` as they are, rank r;
- frozen down-projection (LoRA-Null v2, ``A = A0``): ``A' = A0``, ``B' = B - B0``, rank r;
- every other initialiser: ``A' = [A; A0]`` and ``B' = [B, -B0]``, rank 2r, the way PEFT
  converts PiSSA and CorDA adapters.

PEFT scales by ``lora_alpha / r``; the exported ``lora_alpha`` is ``s * r'`` so the scale stays
``s``. Factors are written in float32 with safetensors. The export refuses adapters on a
linear layer whose weight is shared with another module (tied embeddings), because such a
delta would also change the tied module.

This module is plain PyTorch and does not import Lightning.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from lightning_modules.adapters.initializers import initializer_by_id
from lightning_modules.adapters.lora import LoRALinear, iter_lora_layers, reject_shared_weights

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def exact_delta_factors(adapter: LoRALinear) -> tuple[torch.Tensor, torch.Tensor]:
    """Return float32 factors ``(A', B')`` with ``s B' A' = s (B A - B0 A0)``, of rank r or 2r."""
    A = adapter.lora_A.detach().float()
    B = adapter.lora_B.detach().float()
    A0, B0 = adapter.init_A.float(), adapter.init_B.float()
    if not torch.any(B0 != 0):
        return A.clone(), B.clone()
    if adapter.freeze_A and torch.equal(A, A0):
        return A0.clone(), B - B0
    return torch.cat([A, A0], dim=0), torch.cat([B, -B0], dim=1)


def export_peft_adapter(model: nn.Module, folder: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` for the unmodified base.

    Args:
        model: A Hugging Face model whose linear layers were replaced by :class:`LoRALinear`.
        folder: Output folder, created if needed.
        base_model_name_or_path: Recorded in the config for ``PeftModel.from_pretrained`` users.

    Returns:
        The output folder.

    Raises:
        ValueError: If the model has no adapters, the adapters differ in rank or scale, or an
            adapted weight is tied to another module.
    """
    layers = dict(iter_lora_layers(model))
    if not layers:
        raise ValueError("the model has no LoRA adapters to export.")
    reject_shared_weights(model, {name: adapter.base.weight for name, adapter in layers.items()})
    tensors: dict[str, torch.Tensor] = {}
    ranks, scales, methods = set(), set(), set()
    for name, adapter in layers.items():
        A, B = exact_delta_factors(adapter)
        ranks.add(A.shape[0])
        scales.add(adapter.scale)
        if adapter.is_initialized:
            methods.add(initializer_by_id(int(adapter.init_method_id)).name)
        tensors[f"base_model.model.{name}.lora_A.weight"] = A.contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = B.contiguous()
    if len(ranks) != 1 or len(scales) != 1:
        raise ValueError(
            f"the adapters have ranks {sorted(ranks)} and scales {sorted(scales)}; a PEFT LoRA config stores one "
            f"rank and one alpha, so export adapters trained with one rank and one alpha."
        )
    rank, scale = ranks.pop(), scales.pop()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": rank,
        "lora_alpha": scale * rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "target_modules": sorted(layers),
        "inference_mode": True,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt", "initializers": ",".join(sorted(methods))})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


@torch.no_grad()
def merge_adapters(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by an ``nn.Linear`` with ``W_res + s B A``, in place."""
    layers = dict(iter_lora_layers(model))
    reject_shared_weights(model, {name: adapter.base.weight for name, adapter in layers.items()})
    for name, adapter in layers.items():
        merged = adapter.base.weight.float() + adapter.scale * (adapter.lora_B.float() @ adapter.lora_A.float())
        linear = adapter.base
        linear.weight.data = merged.to(linear.weight.dtype)
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, linear)
    return model

