"""Calibration callback: null-space bases of the adapted layers' inputs, then adapter initialisation.

Before training, forward pre-hooks on every uninitialised :class:`LoRALinear` stream the
uncentred second moment ``C = sum_tokens x x^T / N`` of the layer input over a calibration
set. Padding tokens are skipped by the attention mask. Layers that read the same input tensor
(q/k/v after one norm, gate/up after another) share one accumulator, so each ``C`` is computed
once. Under DDP every rank processes a disjoint share of the batches, the sums and token
counts are reduced across ranks, rank 0 computes the bases and broadcasts them, so every rank
builds identical adapters.

Under FSDP2 (``ModelParallelStrategy``) the adapted weights are sharded. Every rank then runs
the same number of forward passes, because each pass all-gathers parameters: a rank with one
batch fewer repeats a batch whose tokens it does not count. The initialisation gathers one
layer's weight at a time on every rank and writes the residual base and the factors back
sharded, taking rank 0's values.

The bases are cached on disk in safetensors, keyed by the model source, a fingerprint of the
adapted weights, the calibration token ids, the rank and the precision. A second run or a
resumed run does not recompute them; a resumed run restores initialised adapters from its
checkpoint and skips calibration altogether.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Iterable

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lightning_modules.adapters.initializers import get_initializer, initialize_adapters, null_space_basis
from lightning_modules.adapters.lora import LoRALinear, bypass_uninitialized, iter_lora_layers
from lightning_modules.model_loading import cache_root
from lightning_modules.parallel import is_sharded, reshard_all

FINGERPRINT_VALUES = 64


GRAM_BLOCKS = 3


def add_upper_gram(total: torch.Tensor, tokens: torch.Tensor, blocks: int = GRAM_BLOCKS) -> None:
    """Add the upper triangle of ``tokens^T tokens`` to ``total`` in place, by block rows.

    Block row i is ``tokens[:, I]^T tokens[:, I:]``, so ``blocks=3`` does 2/3 of the
    multiply-adds of the full product. This is a symmetric rank-k update built from matrix
    products that run on any device. The entries below the diagonal blocks stay untouched, so
    read the result through :func:`symmetrize_upper`.

    Args:
        total: Running sum, shape (n, n).
        tokens: Activations, shape (N, n).
        blocks: Number of block rows.
    """
    n = tokens.shape[1]
    step = -(-n // blocks)
    for start in range(0, n, step):
        stop = min(start + step, n)
        total[start:stop, start:].addmm_(tokens[:, start:stop].t(), tokens[:, start:])


def symmetrize_upper(total: torch.Tensor) -> torch.Tensor:
    """Return the symmetric matrix whose upper triangle is that of ``total``."""
    upper = torch.triu(total)
    return upper + torch.triu(total, diagonal=1).t()


class SecondMomentAccumulator:
    """Forward pre-hooks that sum ``x x^T`` over unmasked tokens for a set of linear layers.

    Args:
        layers: Layers keyed by qualified name.
        dtype: Accumulation dtype (float32 or float64).
        device: Where the sums live; ``None`` keeps them beside the activations.
    """

    def __init__(self, layers: dict[str, torch.nn.Module], dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> None:
        self.layers = layers
        self.dtype = dtype
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.token_count = 0
        self.leader_of: dict[str, str] = {}  # layer name -> name of the layer whose sum it shares
        self._grouping_done = False
        self._mask: torch.Tensor | None = None
        self._seen: dict[tuple, tuple[str, torch.Tensor]] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "SecondMomentAccumulator":
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_pre_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name, total in self.sums.items():  # the hooks filled the upper triangles only
            self.sums[name] = symmetrize_upper(total)

    def begin_batch(self, attention_mask: torch.Tensor) -> None:
        """Set the (B, T) mask of the next forward pass; count its tokens."""
        self._mask = attention_mask.bool()
        self.token_count += int(self._mask.sum())
        self._seen.clear()

    def end_batch(self) -> None:
        self._grouping_done = True
        self._seen.clear()

    def _make_hook(self, name: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            if self._grouping_done and self.leader_of.get(name, name) != name:
                return
            x = args[0]  # (B, T, n)
            if not self._grouping_done:
                key = (x.data_ptr(), tuple(x.shape), x.dtype)
                fingerprint = x.detach().reshape(-1)[:FINGERPRINT_VALUES].clone()
                if key in self._seen and torch.equal(self._seen[key][1], fingerprint):
                    self.leader_of[name] = self._seen[key][0]
                    return
                self._seen[key] = (name, fingerprint)
                self.leader_of[name] = name
            tokens = x.detach()[self._mask].to(self.dtype)  # (N, n)
            n = tokens.shape[1]
            offloaded = self.device is not None and self.device != tokens.device
            if offloaded or name not in self.sums:
                total = tokens.new_zeros(n, n)
                add_upper_gram(total, tokens)
                if offloaded:
                    total = total.to(self.device)
                if name in self.sums:
                    self.sums[name] += total
                else:
                    self.sums[name] = total
            else:
                add_upper_gram(self.sums[name], tokens)


        return hook


class NullSpaceCalibration(Callback):
    """Initialise LoRA-Null adapters from the null space of calibration activations.

    Args:
        data: Calibration data: a DataModule whose ``train_dataloader()`` yields batches with
            ``input_ids`` and ``attention_mask`` (e.g.
            :class:`~datamodules.calibration.CalibrationTextDataModule`), or a DataLoader. ``None``
            uses ``trainer.datamodule.calibration_dataloader()``.
        precision: ``float64`` or ``float32`` for the eigendecomposition and the factorisation.
        accumulate_dtype: ``float32`` or ``float64`` for the running sums of ``x x^T``.
        offload_to_cpu: Keep the running sums in CPU memory instead of beside the model,
            for models whose covariances do not fit in accelerator memory at once.
        cache_dir: Folder of cached bases; defaults to ``$ADAPTGROUND_CACHE/null_space``.
        use_cache: Read and write the cache.
    """

    def __init__(
        self,
        data: LightningDataModule | DataLoader | None = None,
        precision: str = "float64",
        accumulate_dtype: str = "float32",
        offload_to_cpu: bool = False,
        cache_dir: str | None = None,
        use_cache: bool = True,
    ) -> None:
        dtypes = {"float32": torch.float32, "float64": torch.float64}
        for label, value in (("precision", precision), ("accumulate_dtype", accumulate_dtype)):
            if value not in dtypes:
                raise ValueError(f"NullSpaceCalibration {label}={value!r} is invalid; choose 'float32' or 'float64'.")
        self.data = data
        self.precision = dtypes[precision]
        self.accumulate_dtype = dtypes[accumulate_dtype]
        self.offload_to_cpu = offload_to_cpu
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root() / "null_space"
        self.use_cache = use_cache
        self.last_token_count: int | None = None
        self.last_cache_path: Path | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        method = pl_module.hparams.get("init", "lora")
        initializer = get_initializer(method)
        if not initializer.needs_covariance:
            return
        adapters = dict(iter_lora_layers(pl_module))
        pending = {name: adapter for name, adapter in adapters.items() if not adapter.is_initialized}
        if not pending:
            rank_zero_info(f"All {len(adapters)} adapters are initialised already (restored from a checkpoint); skipping calibration.")
            return
        if len(pending) != len(adapters):
            raise RuntimeError(
                f"{len(adapters) - len(pending)} of {len(adapters)} adapters are initialised and the rest are not; "
                f"the checkpoint does not match the model's target_modules."
            )
        batches = list(self._calibration_batches(trainer, pl_module))
        if len(batches) < trainer.world_size:
            raise ValueError(
                f"the calibration data has {len(batches)} batches for {trainer.world_size} processes; every process "
                f"needs at least one, so add calibration samples or lower its batch_size."
            )
        results = self.compute_bases(trainer, pl_module, pending, batches, initializer.calibration)
        reshard_all(pl_module)  # the initialisation writes into the sharded parameters
        initialize_adapters(pending, method, bases=results, dtype=self.precision)
        rank_zero_info(f"Initialised {len(pending)} adapters with {method}.")

    def compute_bases(
        self, trainer: Trainer, pl_module: LightningModule, adapters: dict[str, LoRALinear], batches: list[dict],
        kind: str = "basis",
    ) -> dict[str, torch.Tensor]:
        """Return every adapter's null-space basis (n x r, ``kind="basis"``) or second moment
        (n x n, ``kind="covariance"``), from the cache or by calibration."""
        key = self.cache_key(pl_module, adapters, batches, kind)
        cache_path = self.cache_dir / f"{key}.safetensors"
        self.last_cache_path = cache_path
        hit = bool(trainer.strategy.broadcast(self.use_cache and cache_path.is_file(), src=0))
        if hit:
            rank_zero_info(f"Loading calibration results ({kind}) from the cache {cache_path}.")
            bases = load_file(str(cache_path)) if trainer.is_global_zero else None
        else:
            bases = self._calibrate(trainer, pl_module, adapters, batches, kind)
            if trainer.is_global_zero and self.use_cache:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                temporary = cache_path.with_suffix(".tmp")
                save_file({name: basis.contiguous() for name, basis in bases.items()}, str(temporary),
                          metadata={"key": key})
                temporary.replace(cache_path)
                rank_zero_info(f"Cached calibration results ({kind}) at {cache_path}.")
        bases = trainer.strategy.broadcast(bases, src=0)
        return {name: basis.to(pl_module.device) for name, basis in bases.items()}

    def _calibrate(
        self, trainer: Trainer, pl_module: LightningModule, adapters: dict[str, LoRALinear], batches: list[dict],
        kind: str,
    ) -> dict[str, torch.Tensor] | None:
        shard = batches[trainer.global_rank::trainer.world_size]
        if is_sharded(pl_module):
            # Every forward pass all-gathers parameters, so every rank must run as many.
            passes = -(-len(batches) // trainer.world_size)
            shard = shard + [{**shard[0], "count_tokens": False}] * (passes - len(shard))
        was_training = pl_module.training
        pl_module.eval()
        accumulator = accumulate_second_moments(
            pl_module.model, adapters, shard, pl_module.device, self.accumulate_dtype,
            offload_to_cpu=self.offload_to_cpu, progress=trainer.is_global_zero,
        )
        pl_module.train(was_training)

        token_count = torch.tensor(float(accumulator.token_count), dtype=torch.float64, device=pl_module.device)
        token_count = trainer.strategy.reduce(token_count, reduce_op="sum")
        leaders = sorted(set(accumulator.leader_of.values()))
        if not leaders:
            raise RuntimeError("no adapted layer ran during calibration; the calibration batches never reached them.")
        for leader in leaders:  # the same order on every rank
            total = accumulator.sums[leader].to(pl_module.device)
            accumulator.sums[leader] = trainer.strategy.reduce(total, reduce_op="sum")
        accumulator.token_count = int(token_count.item())
        self.last_token_count = accumulator.token_count
        if not trainer.is_global_zero:
            return None
        if kind == "covariance":
            return covariances_from_moments(accumulator, adapters)
        return bases_from_moments(accumulator, adapters, self.precision)

    def cache_key(
        self, pl_module: LightningModule, adapters: dict[str, LoRALinear], batches: Iterable[dict], kind: str = "basis"
    ) -> str:
        """Hash the model source, adapted weights, calibration tokens, ranks, precision and result kind."""
        digest = hashlib.sha256()
        settings = {
            "kind": kind,
            "model": str(pl_module.hparams.get("model_name_or_path", type(pl_module).__name__)),
            "precision": str(self.precision),
            "accumulate_dtype": str(self.accumulate_dtype),
            "layers": {name: [adapter.out_features, adapter.in_features, adapter.rank] for name, adapter in sorted(adapters.items())},
        }
        digest.update(json.dumps(settings, sort_keys=True).encode())
        for name, adapter in sorted(adapters.items()):
            weight = adapter.original_weight().double()
            digest.update(f"{name}:{weight.sum().item():.17g}:{weight.square().sum().item():.17g}".encode())
        for batch in batches:
            mask = batch["attention_mask"].bool()
            digest.update(batch["input_ids"][mask].cpu().numpy().tobytes())
            digest.update(mask.sum(dim=1).cpu().numpy().tobytes())
        return digest.hexdigest()[:24]

    def _calibration_batches(self, trainer: Trainer, pl_module: LightningModule) -> Iterable[dict]:
        data = self.data
        if data is None:
            datamodule = trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "calibration_dataloader"):
                raise ValueError(
                    "NullSpaceCalibration has no calibration data: set its 'data' argument to a calibration "
                    "DataModule (e.g. datamodules.calibration.CalibrationTextDataModule)."
                )
            return datamodule.calibration_dataloader()
        if isinstance(data, LightningDataModule):
            if getattr(data, "tokenizer", "absent") is None and getattr(pl_module, "tokenizer", None) is not None:
                data.tokenizer = pl_module.tokenizer
            data.prepare_data()
            data.setup("fit")
            return data.train_dataloader()
        return data


@torch.no_grad()
def accumulate_second_moments(
    model: torch.nn.Module,
    adapters: dict[str, LoRALinear],
    batches: Iterable[dict],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    offload_to_cpu: bool = False,
    progress: bool = True,
) -> SecondMomentAccumulator:
    """Run ``model`` over calibration batches and sum the second moments of the adapters' inputs.

    The model should be in eval mode. Each batch is a dict with ``input_ids`` and
    ``attention_mask`` of shape (B, T). A batch with ``count_tokens`` False runs the forward
    pass but adds nothing to the sums.
    """
    accumulator = SecondMomentAccumulator(adapters, dtype=dtype, device=torch.device("cpu") if offload_to_cpu else None)
    # Only the adapted layers' inputs matter: Hugging Face causal LMs that accept logits_to_keep
    # then skip the vocabulary projection for all but one position (a (B, T, V) tensor).
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with accumulator, bypass_uninitialized(adapters.values()):
        for batch in tqdm(batches, desc="Calibration", unit="batch", disable=not progress):
            input_ids = batch["input_ids"].to(device)
            attention_mask = batch["attention_mask"].to(device)
            counted = attention_mask if batch.get("count_tokens", True) else torch.zeros_like(attention_mask)
            accumulator.begin_batch(counted)
            model(input_ids=input_ids, attention_mask=attention_mask, **extra)
            accumulator.end_batch()
    return accumulator


def warn_if_too_few_tokens(token_count: int, adapters: dict[str, LoRALinear]) -> None:
    """Warn when fewer tokens than the largest adapted input size were seen, because the
    second moments are then rank-deficient and the null space is arbitrary."""
    max_inputs = max(adapter.in_features for adapter in adapters.values())
    if token_count < max_inputs:
        rank_zero_warn(
            f"Calibration saw {token_count} tokens, fewer than the largest adapted input size "
            f"{max_inputs}: the second moments are rank-deficient and the null space is arbitrary. "
            f"Add calibration samples or longer sequences (many times more tokens than {max_inputs})."
        )


def covariances_from_moments(accumulator: SecondMomentAccumulator, adapters: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """Return every adapter's input second moment divided by the token count (n x n, on the CPU)."""
    warn_if_too_few_tokens(accumulator.token_count, adapters)
    count = max(accumulator.token_count, 1)
    return {name: (accumulator.sums[accumulator.leader_of[name]] / count).cpu().clone() for name in adapters}


def bases_from_moments(
    accumulator: SecondMomentAccumulator, adapters: dict[str, LoRALinear], precision: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """Compute every adapter's null-space basis (n x r, on the CPU) from summed second moments."""
    token_count = accumulator.token_count
    warn_if_too_few_tokens(token_count, adapters)
    leaders = sorted(set(accumulator.leader_of.values()))
    bases_by_leader = {}
    for leader in tqdm(leaders, desc="Null-space bases", unit="matrix", disable=len(leaders) < 8):
        covariance = accumulator.sums.pop(leader) / max(token_count, 1)  # free each sum once used
        rank = max(adapter.rank for name, adapter in adapters.items() if accumulator.leader_of[name] == leader)
        basis, _ = null_space_basis(covariance, rank, precision)
        bases_by_leader[leader] = basis.cpu()
    bases = {
        name: bases_by_leader[accumulator.leader_of[name]][:, : adapter.rank].clone()
        for name, adapter in adapters.items()
    }
    rank_zero_info(f"Calibrated {len(adapters)} layers from {token_count} tokens ({len(leaders)} distinct inputs).")
    return bases
