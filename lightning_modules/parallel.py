"""FSDP2 sharding for modules that parallelise themselves under ``ModelParallelStrategy``.

Lightning's ``ModelParallelStrategy`` builds a device mesh with the dimensions
``("data_parallel", "tensor_parallel")`` and hands it to ``LightningModule.configure_model``
as ``self.device_mesh``. The modules of this suite apply FSDP2 (``fully_shard``) only, so the
data-parallel dimension must span every process: ``tensor_parallel_size`` 1 and
``data_parallel_size`` equal to the world size.

FSDP2 shards every parameter along dimension 0 as a ``DTensor``; buffers stay whole on every
rank. Code that needs a whole weight (adapter initialisers) gathers it with
:func:`gather_full` one layer at a time and writes a whole result back with
:func:`copy_full_into`, which keeps only the local rows. Both are collective calls when the
tensor is sharded: every rank must call them for the same tensors in the same order.

This module is plain PyTorch and does not import Lightning.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, distribute_tensor


def data_parallel_mesh(device_mesh: DeviceMesh) -> DeviceMesh:
    """Return the one-dimensional data-parallel mesh that FSDP2 shards over.

    Args:
        device_mesh: The mesh of ``ModelParallelStrategy`` (dimensions ``data_parallel`` and
            ``tensor_parallel``) or a one-dimensional mesh.

    Raises:
        ValueError: If the mesh has a tensor-parallel dimension larger than 1, because these
            modules implement no tensor parallelism.
    """
    if device_mesh.ndim == 1:
        return device_mesh
    names = device_mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1:
        raise ValueError(
            f"the device mesh has tensor_parallel size {device_mesh['tensor_parallel'].size()}, but this module "
            f"applies FSDP2 only. Set ModelParallelStrategy(data_parallel_size=<number of processes>, "
            f"tensor_parallel_size=1)."
        )
    if "data_parallel" not in names:
        raise ValueError(f"the device mesh has no 'data_parallel' dimension (dimensions: {names}).")
    return device_mesh["data_parallel"]


def shard_modules(root: nn.Module, blocks: Iterable[nn.Module], mesh: DeviceMesh, mixed_precision=None) -> None:
    """Apply ``fully_shard`` to every block, then to ``root`` (its remaining parameters).

    Each block becomes one FSDP2 parameter group, all-gathered just before its forward and
    freed after it, so at most about one block is whole at a time. Frozen and trainable
    parameters may share a group: FSDP2 reduces gradients of the trainable ones only.

    Args:
        root: The module that owns the blocks.
        blocks: Submodules of ``root`` to shard as separate groups (decoder layers, attention steps).
        mesh: One-dimensional data-parallel mesh.
        mixed_precision: An optional ``torch.distributed.fsdp.MixedPrecisionPolicy``.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = mixed_precision if mixed_precision is not None else MixedPrecisionPolicy()
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(root, mesh=mesh, mp_policy=policy)


def is_sharded(module: nn.Module) -> bool:
    """Check whether any parameter of ``module`` is a ``DTensor`` (sharded by FSDP2)."""
    return any(isinstance(parameter, DTensor) for parameter in module.parameters())


def reshard_all(module: nn.Module) -> None:
    """Free every whole parameter that FSDP2 kept after a forward pass (the root group keeps its
    parameters whole by default), so that parameters are the sharded ``DTensor`` objects again."""
    from torch.distributed.fsdp import FSDPModule

    for submodule in module.modules():
        if isinstance(submodule, FSDPModule):
            submodule.reshard()


def gather_full(tensor: torch.Tensor) -> torch.Tensor:
    """Return ``tensor`` as a whole local tensor: all-gathered if it is a ``DTensor``, else as is."""
    if isinstance(tensor, DTensor):
        return tensor.full_tensor()
    return tensor


def copy_full_into(target: torch.Tensor, value: torch.Tensor) -> None:
    """Copy the whole tensor ``value`` into ``target`` in place, converting its dtype.

    When ``target`` is a ``DTensor`` shard, rank 0's ``value`` is scattered and every rank
    keeps its own rows, so all ranks end up with rank 0's values even where their ``value``
    differs in the last bits.
    """
    if isinstance(target, DTensor):
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"cannot copy a tensor of shape {tuple(value.shape)} into a DTensor of shape {tuple(target.shape)}.")
        local = target.to_local()
        shard = distribute_tensor(value.detach().to(device=local.device, dtype=target.dtype), target.device_mesh, target.placements)
        local.copy_(shard.to_local())
    else:
        target.copy_(value.to(target.dtype))
