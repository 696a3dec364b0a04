"""LoRA linear layers over a frozen residual base, and their injection by name pattern.

A :class:`LoRALinear` computes ``y = W_res x + b + s * B (A dropout(x))`` where ``W_res`` and
``b`` are the frozen weight and bias of the wrapped ``nn.Linear``, ``A`` (r x n) is the
down-projection, ``B`` (m x r) the up-projection and ``s`` the scale. Initialisers that start
from non-zero factors ``A0, B0`` replace the frozen weight by ``W_res = W - s * B0 A0`` so that
the layer computes exactly ``W x + b`` at the start. The factors ``A0, B0`` are persistent
buffers: an adapter-only state dict (see :func:`adapter_state_dict`) contains everything needed
to rebuild ``W_res`` from the unmodified pre-trained weight.

Under FSDP2 the base weight and the factors ``A`` and ``B`` are ``DTensor`` shards. The methods
that need a whole weight gather it (one layer at a time) and write the result back sharded.
They are then collective calls, so every rank must make them in the same order.

This module is plain PyTorch and does not import Lightning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.parallel import copy_full_into, gather_full


class LoRALinear(nn.Module):
    """A LoRA adapter around a frozen ``nn.Linear``.

    Args:
        base: The linear layer to adapt. Its weight and bias are frozen and kept in their dtype.
        rank: Rank r of the adapter.
        alpha: Scaling numerator: the adapter output is multiplied by ``s = alpha / rank``.
        dropout: Dropout probability on the adapter's input during training.
        adapter_dtype: Dtype of ``A`` and ``B``. Defaults to float32 for float16/bfloat16 bases
            and to the base dtype otherwise.

    Raises:
        ValueError: If ``rank`` is not positive or exceeds ``min(in_features, out_features)``.
    """

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float | None = None,
        dropout: float = 0.0,
        adapter_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        max_rank = min(base.in_features, base.out_features)
        if rank < 1 or rank > max_rank:
            raise ValueError(
                f"LoRA rank {rank} is invalid for a linear layer of shape "
                f"({base.out_features}, {base.in_features}); choose 1 <= rank <= {max_rank}."
            )
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scale = self.alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if adapter_dtype is None:
            weight_dtype = base.weight.dtype
            adapter_dtype = torch.float32 if weight_dtype in (torch.float16, torch.bfloat16) else weight_dtype
        device = base.weight.device
        n, m = base.in_features, base.out_features
        self.lora_A = nn.Parameter(torch.zeros(rank, n, device=device, dtype=adapter_dtype))
        self.lora_B = nn.Parameter(torch.zeros(m, rank, device=device, dtype=adapter_dtype))
        # Initial factors whose product was subtracted from the base weight (zeros: nothing was).
        self.register_buffer("init_A", torch.zeros(rank, n, device=device, dtype=torch.float32))
        self.register_buffer("init_B", torch.zeros(m, rank, device=device, dtype=torch.float32))
        # 0: factors not initialised yet; otherwise the registry index of the initialiser.
        self.register_buffer("init_method_id", torch.zeros((), dtype=torch.long, device=device))
        # Python-side record of what is currently subtracted from base.weight (not saved).
        self._residual_applied = False
        self.freeze_A = False
        # True while the adapter branch is skipped (see bypass_uninitialized).
        self.bypass = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The frozen residual weight ``W_res`` (for code that inspects ``module.weight``)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def is_initialized(self) -> bool:
        return bool(self.init_method_id.item() != 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)  # (..., m)
        if self.bypass:
            return result
        adapter_in = self.dropout(x).to(self.lora_A.dtype)  # (..., n)
        update = F.linear(F.linear(adapter_in, self.lora_A), self.lora_B)  # (..., r) -> (..., m)
        if self.scale != 1.0:
            update = update * self.scale
        return result + update.to(result.dtype)

    @torch.no_grad()
    def original_weight(self) -> torch.Tensor:
        """Return the whole pre-trained weight ``W = W_res + s * B0 A0`` in float32 (gathered
        from all ranks when the base weight is sharded)."""
        weight = gather_full(self.base.weight).float()
        if self._residual_applied:
            weight = weight + self.scale * (self.init_B @ self.init_A)
        return weight

    @torch.no_grad()
    def set_factors(self, A: torch.Tensor, B: torch.Tensor, method_id: int, freeze_A: bool) -> None:
        """Set ``A`` and ``B`` to the given initial factors and rebuild the residual base.

        Args:
            A: Down-projection, shape (r, n).
            B: Up-projection, shape (m, r). The product ``s * B A`` is subtracted from the
                pre-trained weight, so the layer output does not change.
            method_id: Registry index of the initialiser (non-zero).
            freeze_A: Whether ``A`` stays fixed during training.
        """
        expected_A = (self.rank, self.in_features)
        expected_B = (self.out_features, self.rank)
        if tuple(A.shape) != expected_A or tuple(B.shape) != expected_B:
            raise ValueError(
                f"factor shapes {tuple(A.shape)} and {tuple(B.shape)} do not match the adapter's "
                f"{expected_A} and {expected_B}."
            )
        self._restore_original_weight()
        self.init_A.copy_(A.float())
        self.init_B.copy_(B.float())
        copy_full_into(self.lora_A, A)
        copy_full_into(self.lora_B, B)
        self.init_method_id.fill_(method_id)
        self._apply_residual()
        self.set_freeze_A(freeze_A)

    def set_freeze_A(self, freeze_A: bool) -> None:
        self.freeze_A = freeze_A
        self.lora_A.requires_grad_(not freeze_A)

    def _restore_original_weight(self) -> None:
        if self._residual_applied:
            copy_full_into(self.base.weight, self.original_weight())
            self._residual_applied = False

    def _apply_residual(self) -> None:
        if not torch.any(self.init_B != 0):
            return
        # W_res = W - s * B0 A0, computed in float32 whatever the base dtype.
        residual = gather_full(self.base.weight).float() - self.scale * (self.init_B @ self.init_A)
        copy_full_into(self.base.weight, residual)
        self._residual_applied = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Loading new initial factors: put the pre-trained weight back before the buffers
        # change, then subtract the loaded factors. A state dict that also contains base.weight
        # (a full checkpoint) stores W_res already, so the residual is not applied twice.
        loads_init = prefix + "init_B" in state_dict
        loads_base = prefix + "base.weight" in state_dict
        if loads_init:
            with torch.no_grad():
                self._restore_original_weight()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if loads_init:
            with torch.no_grad():
                if loads_base:
                    self._residual_applied = bool(torch.any(self.init_B != 0))
                else:
                    self._apply_residual()

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale:g}, freeze_A={self.freeze_A}"


def find_target_linears(model: nn.Module, target_modules: Iterable[str]) -> dict[str, nn.Linear]:
    """Find the ``nn.Linear`` modules whose qualified name matches a target pattern.

    A pattern matches a module when it equals the last component of the module's name
    (``"q_proj"``) or when the regular expression matches the whole qualified name
    (``r".*\\.layers\\.0\\..*_proj"``).

    Raises:
        ValueError: If a pattern matches no linear layer; the message lists the linear
            layer names the model has.
    """
    patterns = list(target_modules)
    if not patterns:
        raise ValueError("target_modules is empty; name at least one linear layer, e.g. ['q_proj', 'v_proj'].")
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    matched: dict[str, nn.Linear] = {}
    for pattern in patterns:
        hits = {
            name: module
            for name, module in linears.items()
            if name.rsplit(".", 1)[-1] == pattern or re.fullmatch(pattern, name)
        }
        if not hits:
            leaf_names = sorted({name.rsplit(".", 1)[-1] for name in linears})
            raise ValueError(
                f"target module pattern {pattern!r} matches no nn.Linear in {type(model).__name__}. "
                f"Linear layer names in this model: {leaf_names}."
            )
        matched.update(hits)
    return matched


def inject_lora(
    model: nn.Module,
    target_modules: Iterable[str],
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    adapter_dtype: torch.dtype | None = None,
) -> dict[str, LoRALinear]:
    """Replace every targeted ``nn.Linear`` of ``model`` by a :class:`LoRALinear` in place.

    All other parameters of the model are frozen. The adapters start as plain LoRA with
    zero factors; an initialiser sets them afterwards.

    Returns:
        The new adapters keyed by qualified module name.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    targets = find_target_linears(model, target_modules)
    reject_shared_weights(model, {name: linear.weight for name, linear in targets.items()})
    adapters: dict[str, LoRALinear] = {}
    for name, linear in targets.items():
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        try:
            adapter = LoRALinear(linear, rank, alpha=alpha, dropout=dropout, adapter_dtype=adapter_dtype)
        except ValueError as error:
            raise ValueError(f"cannot adapt {name!r}: {error}") from error
        setattr(parent, child_name, adapter)
        adapters[name] = adapter
    return adapters


def reject_shared_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Raise if a weight to be adapted is shared with another module (e.g. tied embeddings),
    because rebuilding or merging it would change that module too."""
    owners: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), []).append(name.removesuffix(".weight").removesuffix(".base"))
    for name, weight in weights.items():
        others = sorted(set(owners.get(id(weight), [])) - {name})
        if others:
            raise ValueError(
                f"linear layer {name!r} shares its weight with {others} (tied weights); adapting it would change "
                f"them too. Remove {name.rsplit('.', 1)[-1]!r} from target_modules."
            )


def iter_lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


ADAPTER_KEY_PATTERN = re.compile(r"(^|\.)(lora_A|lora_B|init_A|init_B|init_method_id)$")


def is_adapter_key(key: str) -> bool:
    """Check whether a state-dict key belongs to a LoRA adapter (factors, initial factors, method)."""
    return ADAPTER_KEY_PATTERN.search(key) is not None


def adapter_state_dict(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Return the adapter-only part of ``model.state_dict()``: enough to rebuild the model
    from its pre-trained weights."""
    return {key: value for key, value in model.state_dict(prefix=prefix).items() if is_adapter_key(key)}


def kaiming_uniform_like_linear(shape: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample a (rows, fan_in) matrix as ``nn.Linear`` initialises its weight (a = sqrt(5))."""
    fan_in = shape[1]
    bound = math.sqrt(6.0 / ((1 + 5.0) * fan_in))  # gain sqrt(2 / (1 + a^2)) with a = sqrt(5)
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


@contextmanager
def bypass_uninitialized(adapters: Iterable[LoRALinear]) -> Iterator[None]:
    """Skip the adapter branch of every adapter whose factors are not initialised yet.

    Such factors are zeros, so the branch adds nothing. Skipping it saves its two small matrix
    products, e.g. while calibration runs the model before initialisation.
    """
    skipped = [adapter for adapter in adapters if not adapter.is_initialized]
    for adapter in skipped:
        adapter.bypass = True
    try:
        yield
    finally:
        for adapter in skipped:
            adapter.bypass = False


@contextmanager
def initial_adapter_state(model: nn.Module) -> Iterator[None]:
    """Temporarily set every adapter's factors to their initial values, so that the model
    computes the pre-trained model's function (``W_res + s B0 A0 = W``)."""
    saved = []
    with torch.no_grad():
        for _, adapter in iter_lora_layers(model):
            saved.append((adapter, adapter.lora_A.detach().clone(), adapter.lora_B.detach().clone()))
            copy_full_into(adapter.lora_A, adapter.init_A)
            copy_full_into(adapter.lora_B, adapter.init_B)
    try:
        yield
    finally:
        with torch.no_grad():
            for adapter, lora_A, lora_B in saved:
                adapter.lora_A.copy_(lora_A)
                adapter.lora_B.copy_(lora_B)
