"""Initialisers that compute the starting factors of a LoRA adapter.

Each initialiser maps the pre-trained weight ``W`` (m x n), an optional input second moment
``C`` (n x n) and a rank r to factors ``A`` (r x n) and ``B`` (m x r) with the scale already
divided out, so that ``s * B A`` is what :class:`~lightning_modules.adapters.lora.LoRALinear`
subtracts from ``W``. The registry :data:`INITIALIZERS` names them for configs.

- ``lora``: ``A`` Kaiming-uniform, ``B`` zero (the base weight is unchanged).
- ``lora_null_v1`` / ``lora_null_v2``: null-space initialisation. The r eigenvectors of ``C``
  with the smallest eigenvalues span ``U_null`` (n x r); ``W U_null = U S Q^T`` (thin SVD);
  ``B = U sqrt(S / s)`` and ``A = sqrt(S / s) Q^T U_null^T``, so ``s B A = W U_null U_null^T``
  and the rows of ``A`` lie in span(U_null). v1 trains ``A`` and ``B``; v2 keeps ``A`` frozen.
- ``pissa``: the r principal singular directions of ``W = U S V^T``: ``B = U_r sqrt(S_r / s)``,
  ``A = sqrt(S_r / s) V_r^T``.
- ``milora``: the same with the r minor (smallest) singular directions of ``W``.
- ``corda_kpm``: CorDA's knowledge-preserved mode. With the damped second moment
  ``C_d = C + damping * mean(diag(C)) * I``, ``W C_d = U S V^T`` and ``W = U S V^T C_d^-1``;
  the adapter takes the r components with the smallest singular values:
  ``B = U_r sqrt(S_r / s)``, ``A = sqrt(S_r / s) V_r^T C_d^-1``. The damping is 0.01, PEFT's
  starting value, doubled while ``C_d`` is too ill-conditioned to invert (PEFT's rule: the
  Frobenius norm of ``C_d C_d^-1 - I`` at least 0.05), so the factors match PEFT's CorDA on the
  same second moment.

Every initialiser subtracts ``s B A`` from the frozen weight, so the initial output is exact.

All linear algebra runs in float32 or float64 on the device of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import scipy.linalg
import torch

from lightning_modules.adapters.lora import LoRALinear, kaiming_uniform_like_linear


@dataclass(frozen=True)
class Initializer:
    """An initialiser of the registry.

    Attributes:
        method_id: Non-zero index stored in the adapter's ``init_method_id`` buffer.
        calibration: What the calibration callback must provide per layer: ``None``,
            ``"basis"`` (the null-space basis, n x r) or ``"covariance"`` (the second moment
            divided by the token count, n x n).
        freeze_A: Whether the down-projection stays fixed during training.
    """

    name: str
    method_id: int
    calibration: str | None
    freeze_A: bool
    compute: Callable[..., tuple[torch.Tensor, torch.Tensor]]

    @property
    def needs_covariance(self) -> bool:
        """Whether the initialiser needs calibration activations."""
        return self.calibration is not None


def null_space_basis(covariance: torch.Tensor, rank: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the eigenvectors of ``covariance`` with the ``rank`` smallest eigenvalues.

    On the CPU only those ``rank`` eigenpairs are computed (LAPACK ``syevr`` through
    :func:`scipy.linalg.eigh` with an index subset), several times faster than a full
    decomposition; on an accelerator :func:`torch.linalg.eigh` computes all of them.

    Args:
        covariance: Symmetric positive semi-definite matrix, shape (n, n). Both solvers read
            its lower triangle only.
        rank: Number of eigenvectors r.
        dtype: float32 or float64, the precision of the eigendecomposition.

    Returns:
        ``(basis, eigenvalues)``: the basis (n, r) with orthonormal columns in ``dtype`` on the
        device of ``covariance``, and its eigenvalues (r,) in ascending order.
    """
    n = covariance.shape[0]
    if rank > n:
        raise ValueError(f"rank {rank} exceeds the input size {n} of the layer; choose rank <= {n}.")
    check_finite(covariance)
    if covariance.device.type == "cpu":
        matrix = covariance.to(dtype, copy=True).numpy()
        eigenvalues, eigenvectors = scipy.linalg.eigh(
            matrix, subset_by_index=[0, rank - 1], driver="evr", overwrite_a=True, check_finite=False
        )  # ascending eigenvalues
        return torch.from_numpy(eigenvectors), torch.from_numpy(eigenvalues)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.to(dtype))  # ascending eigenvalues
    return eigenvectors[:, :rank], eigenvalues[:rank]


def factor_in_subspace(weight: torch.Tensor, basis: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Factor ``W P`` with ``P = basis basis^T`` exactly into ``s B A`` of rank r.

    Uses the thin SVD of the small (m x r) matrix ``W basis`` instead of an (m x n) SVD.

    Args:
        weight: Pre-trained weight ``W``, shape (m, n).
        basis: Orthonormal columns ``U_null``, shape (n, r).
        scale: Adapter scale ``s``; the factors are divided by ``sqrt(s)`` each.

    Returns:
        ``(A, B)`` in float32 with shapes (r, n) and (m, r).
    """
    projected = weight.to(basis.dtype) @ basis  # (m, r)
    u, singular_values, vh = torch.linalg.svd(projected, full_matrices=False)  # (m, r), (r,), (r, r)
    root = torch.sqrt(singular_values / scale)  # (r,)
    B = u * root  # (m, r)
    A = (root[:, None] * vh) @ basis.t()  # (r, n)
    return A.float(), B.float()


def _plain_lora(weight: torch.Tensor, covariance: torch.Tensor | None, rank: int, scale: float,
                generator: torch.Generator | None = None, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = weight.shape
    A = kaiming_uniform_like_linear((rank, n), generator=generator).to(weight.device)
    B = torch.zeros(m, rank, device=weight.device)
    return A, B


def _lora_null(weight: torch.Tensor, covariance: torch.Tensor | None, rank: int, scale: float,
               basis: torch.Tensor | None = None, dtype: torch.dtype = torch.float64,
               **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    if basis is None:
        if covariance is None:
            raise ValueError("LoRA-Null needs the calibration second moment of the layer's input; none was given.")
        basis, _ = null_space_basis(covariance.to(weight.device), rank, dtype)
    return factor_in_subspace(weight, basis.to(weight.device), scale)


def split_singular_values(u: torch.Tensor, singular_values: torch.Tensor, vh: torch.Tensor,
                          scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(A, B)`` in float32 with ``s B A = u diag(singular_values) vh``."""
    root = torch.sqrt(singular_values / scale)  # (r,)
    return (root[:, None] * vh).float(), (u * root).float()


def _singular_directions(weight: torch.Tensor, rank: int, scale: float, principal: bool,
                         dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    u, singular_values, vh = torch.linalg.svd(weight.to(dtype), full_matrices=False)  # descending values
    part = slice(0, rank) if principal else slice(singular_values.shape[0] - rank, None)
    return split_singular_values(u[:, part], singular_values[part], vh[part], scale)


def _pissa(weight: torch.Tensor, covariance: torch.Tensor | None, rank: int, scale: float,
           dtype: torch.dtype = torch.float64, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    return _singular_directions(weight, rank, scale, principal=True, dtype=dtype)


def _milora(weight: torch.Tensor, covariance: torch.Tensor | None, rank: int, scale: float,
            dtype: torch.dtype = torch.float64, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    return _singular_directions(weight, rank, scale, principal=False, dtype=dtype)


CORDA_DAMPING = 0.01
CORDA_MAX_INVERSE_ERROR = 0.05
CORDA_MAX_DOUBLINGS = 40


def check_finite(covariance: torch.Tensor) -> None:
    """Raise a ValueError if the second moment contains NaN or infinite values."""
    if not bool(torch.isfinite(covariance).all()):
        raise ValueError(
            "the calibration second moment contains NaN or infinite values; check that the model's outputs "
            "on the calibration data are finite (e.g. run it in float32 instead of float16)."
        )


def damped_covariance(covariance: torch.Tensor, damping: float = CORDA_DAMPING) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(C_d, C_d^-1)`` with ``C_d = C + d * mean(diag(C)) * I``, where ``d`` starts at
    ``damping`` and doubles until ``||C_d C_d^-1 - I||_F < 0.05``."""
    check_finite(covariance)
    n = covariance.shape[0]
    identity = torch.eye(n, dtype=covariance.dtype, device=covariance.device)
    symmetric = (covariance + covariance.t()) / 2
    mean_diagonal = symmetric.diagonal().mean().clamp_min(1e-12)
    for _ in range(CORDA_MAX_DOUBLINGS):
        damped = symmetric + damping * mean_diagonal * identity
        inverse = torch.linalg.inv(damped)
        if torch.dist(damped @ inverse, identity) < CORDA_MAX_INVERSE_ERROR:
            return damped, inverse
        damping *= 2
    raise ValueError(
        f"the damped calibration second moment could not be inverted accurately even with damping {damping / 2:.3g}; "
        f"run the initialisation in float64."
    )


def _corda_kpm(weight: torch.Tensor, covariance: torch.Tensor | None, rank: int, scale: float,
               dtype: torch.dtype = torch.float64, damping: float = CORDA_DAMPING,
               **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    if covariance is None:
        raise ValueError("CorDA needs the calibration second moment of the layer's input; none was given.")
    damped, inverse = damped_covariance(covariance.to(device=weight.device, dtype=dtype), damping)
    u, singular_values, vh = torch.linalg.svd(weight.to(dtype) @ damped, full_matrices=False)  # (m, k), (k,), (k, n)
    minor = slice(singular_values.shape[0] - rank, None)
    return split_singular_values(u[:, minor], singular_values[minor], vh[minor] @ inverse, scale)


INITIALIZERS: dict[str, Initializer] = {
    "lora": Initializer("lora", 1, calibration=None, freeze_A=False, compute=_plain_lora),
    "lora_null_v1": Initializer("lora_null_v1", 2, calibration="basis", freeze_A=False, compute=_lora_null),
    "lora_null_v2": Initializer("lora_null_v2", 3, calibration="basis", freeze_A=True, compute=_lora_null),
    "pissa": Initializer("pissa", 4, calibration=None, freeze_A=False, compute=_pissa),
    "milora": Initializer("milora", 5, calibration=None, freeze_A=False, compute=_milora),
    "corda_kpm": Initializer("corda_kpm", 6, calibration="covariance", freeze_A=False, compute=_corda_kpm),
}


def get_initializer(name: str) -> Initializer:
    """Look up an initialiser by name.

    Raises:
        ValueError: If the name is not registered; the message lists the registered names.
    """
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown LoRA initialiser {name!r}; choose one of {sorted(INITIALIZERS)}.") from None


def initializer_by_id(method_id: int) -> Initializer:
    for initializer in INITIALIZERS.values():
        if initializer.method_id == method_id:
            return initializer
    raise ValueError(f"no LoRA initialiser has id {method_id}; the checkpoint was written by another version.")


def initialize_adapters(
    adapters: dict[str, LoRALinear],
    method: str,
    bases: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> None:
    """Initialise every adapter with one method and rebuild its residual base weight.

    Args:
        adapters: Adapters keyed by qualified module name.
        method: A name of :data:`INITIALIZERS`.
        bases: Calibration results keyed by module name, for methods that need them: null-space
            bases (n x r) or second moments (n x n), as the initialiser's ``calibration`` field names.
        seed: Seed of random factors (plain LoRA), drawn per layer in name order.
        dtype: Precision of the linear algebra (float32 or float64).

    Raises:
        ValueError: If the method needs a basis that ``bases`` does not contain.
    """
    initializer = get_initializer(method)
    generator = torch.Generator().manual_seed(seed)
    for name in sorted(adapters):
        adapter = adapters[name]
        basis = covariance = None
        if initializer.needs_covariance:
            if bases is None or name not in bases:
                raise ValueError(f"{method} needs a calibration {initializer.calibration} for {name!r}, and none was computed.")
            if initializer.calibration == "basis":
                basis = bases[name]
            else:
                covariance = bases[name]
        weight = adapter.original_weight()  # (m, n) float32
        A, B = initializer.compute(
            weight, covariance, adapter.rank, adapter.scale, generator=generator, basis=basis, dtype=dtype
        )
        adapter.set_factors(A, B, initializer.method_id, initializer.freeze_A)
