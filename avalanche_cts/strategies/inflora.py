"""InfLoRA (Liang & Li, CVPR 2024, https://arxiv.org/abs/2404.00228) for timm ViTs.

Paper notation (InfLoRA's code swaps the names): every adapted map ``W`` (d_O x d_I; the
key and value slices of each block's fused ``attn.qkv``) becomes ``W + sum_j A_j B_j``.

1. Before task t, ``B_t`` (r x d_I, frozen) is designed from the task's input covariance
   ``H = E[x x^T]`` over all tokens (x = the LayerNorm'd block input that ``qkv`` sees)
   with the old tasks' subspace M projected out (:class:`DualGPM`); its rows are the r
   leading left singular vectors of the projected covariance, scaled by ``1/sqrt(3)``.
2. ``A_t`` (d_O x r, one for k and one for v) starts at zero and is trained together with
   task t's linear head, with the local cross-entropy on that head's logits.
3. After task t, DualGPM adds the task's input subspace with the threshold
   ``eps_t = 0.98 + 0.02 t / T`` (t 0-based), and ``A_t B_t`` is merged into ``W``, so
   inference costs nothing extra.

Per-task heads are concatenated at test time (:class:`~.base.TaskHeads`).
Deviations from InfLoRA's code (liangyanshuo/InfLoRA ``methods/inflora.py``): rows of
``B_t`` whose singular value is ~0 (the projected covariance has rank < r, e.g. tiny
models) are zeroed instead of taking arbitrary null-space directions, which could point
into M; when the first task keeps k >= d/2 directions, the complement is stored in
"retain" mode (the code stores the k directions themselves under that label).

Caveat for small models: the energy criterion runs on squared covariance singular values,
so with a flat spectrum M keeps few directions (3-6 of 32 in ``vit_digits_micro``) and B_t
then sits where old inputs still carry energy; interference-freeness needs the fast
spectral decay of large pretrained ViTs (or a higher ``eps_base``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .base import PEFTTemplate, TaskHeads, freeze

__all__ = [
    "KVLoRALinear",
    "add_kv_lora",
    "InputCovariance",
    "DualGPM",
    "dualgpm_threshold",
    "design_down",
    "inflora_trainable_params",
    "InfLoRA",
]

_ZERO_TOL = 1e-10
"""Singular values below this fraction of the covariance's largest count as zero."""


class KVLoRALinear(nn.Linear):
    """A timm fused ``qkv`` projection ``(..., d_I) -> (..., 3 h)`` with one low-rank branch
    ``A B`` added to its key and value slices (outputs ``[h, 3h)``).

    Shares ``weight`` and ``bias`` with the ``nn.Linear`` it replaces, so the state dict
    keeps the same keys. ``branch_B`` ``(r, d_I)`` is a buffer, ``branch_A`` ``(2h, r)`` a
    parameter; both are ``None`` without a branch.
    """

    def __init__(self, base: nn.Linear):
        nn.Module.__init__(self)
        if base.out_features % 3:
            raise ValueError(f"a fused qkv layer has 3h outputs, got {base.out_features}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.register_buffer("branch_B", None)
        self.register_parameter("branch_A", None)

    @property
    def kv_start(self) -> int:
        """First output index of the key slice (= h)."""
        return self.out_features // 3

    def add_branch(self, down: Tensor) -> nn.Parameter:
        """Add the branch with the frozen ``B = down`` ``(r, d_I)`` and a zero trainable ``A``."""
        if self.branch_A is not None:
            raise RuntimeError("merge the current branch before adding a new one")
        self.branch_B = down.to(self.weight)
        self.branch_A = nn.Parameter(self.weight.new_zeros(2 * self.kv_start, down.shape[0]))
        return self.branch_A

    def delta_weight(self) -> Tensor:
        """The branch as a ``(3h, d_I)`` weight update (zeros on the query slice)."""
        delta = torch.zeros_like(self.weight)
        if self.branch_A is not None:
            delta[self.kv_start:] = self.branch_A @ self.branch_B
        return delta

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``A B`` into ``weight`` and drop the branch."""
        self.weight += self.delta_weight()
        self.branch_A = None
        self.branch_B = None

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.branch_A is None:
            return out
        delta = F.linear(F.linear(x, self.branch_B), self.branch_A)
        return torch.cat([out[..., : self.kv_start], out[..., self.kv_start:] + delta], -1)


def add_kv_lora(model: nn.Module, blocks: Optional[Iterable[int]] = None) -> List[KVLoRALinear]:
    """Replace ``model.blocks[i].attn.qkv`` by :class:`KVLoRALinear` for ``i`` in ``blocks``
    (default: all) of a timm ViT; return the new layers in block order."""
    layers = []
    for i in sorted(range(len(model.blocks)) if blocks is None else blocks):
        attn = model.blocks[i].attn
        if not isinstance(getattr(attn, "qkv", None), nn.Linear):
            raise TypeError(f"block {i} has no fused nn.Linear qkv projection")
        if not isinstance(attn.qkv, KVLoRALinear):
            attn.qkv = KVLoRALinear(attn.qkv)
        layers.append(attn.qkv)
    return layers


class InputCovariance:
    """Context manager accumulating ``E[x x^T]`` ``(d_I, d_I)`` (float64) over all tokens
    of the inputs of ``layers`` during the forwards it encloses."""

    def __init__(self, layers: Sequence[nn.Module]):
        self.layers = list(layers)
        self.sums: List[Optional[Tensor]] = [None] * len(self.layers)
        self.counts = [0] * len(self.layers)
        self._handles: list = []

    def _hook(self, i: int):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            xtx = (x.T @ x).double()
            self.sums[i] = xtx if self.sums[i] is None else self.sums[i] + xtx
            self.counts[i] += x.shape[0]

        return hook

    def __enter__(self) -> "InputCovariance":
        self._handles = [m.register_forward_pre_hook(self._hook(i))
                         for i, m in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def covariances(self) -> List[Tensor]:
        """Per-layer ``E[x x^T]`` on the CPU."""
        if not all(self.counts):
            raise RuntimeError("no forward pass went through the layers")
        return [(s / n).cpu() for s, n in zip(self.sums, self.counts)]


def dualgpm_threshold(t: int, n_tasks: int, base: float = 0.98, final: float = 1.0) -> float:
    """DualGPM energy threshold after 0-based task ``t`` of ``T = n_tasks``:
    ``base + (final - base) t / T``."""
    return base + (final - base) * t / n_tasks


def _complement(basis: Tensor) -> Tensor:
    """Orthonormal basis ``(d, d - k)`` of the orthogonal complement of ``basis`` ``(d, k)``."""
    u = torch.linalg.svd(basis, full_matrices=True)[0]
    return u[:, basis.shape[1]:]


class DualGPM:
    """Per-layer memory of the old tasks' input subspace M (GPM, Saha et al. ICLR 2021, in
    the dual form of InfLoRA).

    A layer stores an orthonormal basis of M (``"remove"`` mode) while dim M <= d/2, else a
    basis of its complement (``"retain"``). Energies are the squared singular values of the
    covariance ``E[x x^T]`` (as in InfLoRA's code).
    """

    def __init__(self):
        self.bases: List[Tensor] = []
        self.modes: List[str] = []

    def protected_basis(self, i: int) -> Tensor:
        """Orthonormal basis ``(d, dim M)`` of layer ``i``'s old-task subspace."""
        b = self.bases[i]
        return b if self.modes[i] == "remove" else _complement(b)

    def project(self, i: int, cov: Tensor) -> Tensor:
        """``(I - M M^T) cov`` for layer ``i`` (``cov`` itself before the first update)."""
        if not self.bases:
            return cov
        b = self.bases[i].to(cov)
        if self.modes[i] == "remove":
            return cov - b @ (b.T @ cov)
        return b @ (b.T @ cov)

    def update(self, covs: Sequence[Tensor], threshold: float) -> None:
        """Add the subspaces of a finished task's per-layer covariances ``(d, d)``."""
        first = not self.bases
        for i, cov in enumerate(covs):
            cov = cov.double().cpu()
            d = cov.shape[0]
            if first:
                basis, mode = _first_basis(cov, threshold)
            elif self.modes[i] == "remove":
                basis, mode = _grow(self.bases[i], cov, threshold), "remove"
            else:
                basis, mode = _shrink(self.bases[i], cov, threshold), "retain"
            if mode == "remove" and basis.shape[1] > d / 2:
                basis, mode = _complement(basis), "retain"
            if first:
                self.bases.append(basis)
                self.modes.append(mode)
            else:
                self.bases[i], self.modes[i] = basis, mode


def _first_basis(cov: Tensor, eps: float) -> Tuple[Tensor, str]:
    u, s, _ = torch.linalg.svd(cov)
    energy = s**2 / (s**2).sum()
    k = max(int((energy.cumsum(0) < eps).sum()), 1)
    if k < cov.shape[0] / 2:
        return u[:, :k], "remove"
    return u[:, k:], "retain"


def _grow(basis: Tensor, cov: Tensor, eps: float) -> Tensor:
    """Remove mode: append residual directions until the captured energy reaches ``eps``."""
    total = (cov**2).sum()
    resid = cov - basis @ (basis.T @ cov)
    u, s, _ = torch.linalg.svd(resid)
    captured = (total - (s**2).sum()) / total
    r = 0
    while r < len(s) and captured < eps:
        captured += s[r] ** 2 / total
        r += 1
    return torch.cat([basis, u[:, :r]], 1)[:, : cov.shape[0]]


def _shrink(free: Tensor, cov: Tensor, eps: float) -> Tensor:
    """Retain mode: take the new task's leading directions out of the free space ``free``
    until the energy left in it falls below ``1 - eps``."""
    total = (cov**2).sum()
    inside = free @ (free.T @ cov)
    u, s, _ = torch.linalg.svd(inside)
    left = (s**2).sum() / total
    r = 0
    while r < free.shape[1] and left >= 1 - eps:
        left -= s[r] ** 2 / total
        r += 1
    if r == 0:
        return free
    rest = free - u[:, :r] @ (u[:, :r].T @ free)
    return torch.linalg.svd(rest)[0][:, : free.shape[1] - r]


def design_down(cov_hat: Tensor, rank: int, cov_scale: Optional[float] = None) -> Tensor:
    """``B_t`` ``(rank, d)``: the leading left singular vectors of the projected covariance
    ``cov_hat`` ``(d, d)`` as rows, times ``1/sqrt(3)``; rows with a singular value below
    ``1e-10 * cov_scale`` (default: ``cov_hat``'s largest) are zero."""
    if rank > cov_hat.shape[0]:
        raise ValueError(f"rank {rank} exceeds the input size {cov_hat.shape[0]}")
    u, s, _ = torch.linalg.svd(cov_hat.double())
    scale = float(s[0]) if cov_scale is None else cov_scale
    down = u[:, :rank].T / math.sqrt(3.0)
    down[s[:rank] <= _ZERO_TOL * scale] = 0.0
    return down


def inflora_trainable_params(embed_dim: int, n_blocks: int, rank: int,
                             classes_per_task: int, kv_dim: Optional[int] = None) -> int:
    """Trainable parameters per task: ``n_blocks * 2 * kv_dim * rank`` (A_t of k and v) +
    ``embed_dim * c + c`` (the task's head). ViT-B/16, r = 10, c = 20: 199,700."""
    kv = embed_dim if kv_dim is None else kv_dim
    return n_blocks * 2 * kv * rank + embed_dim * classes_per_task + classes_per_task


class InfLoRA(PEFTTemplate):
    """InfLoRA as an Avalanche strategy over a timm ``VisionTransformer`` (any size).

    The model is modified in place: ``qkv`` layers become :class:`KVLoRALinear`, the head
    becomes :class:`~.base.TaskHeads`, everything else is frozen. Train experiences in order;
    the model stays a timm ViT (logits over the global label space).

    :param model: a timm ViT, ideally pretrained.
    :param rank: LoRA rank r.
    :param n_experiences: number of tasks T of the threshold schedule (default: the length
        of the first experience's stream).
    :param lr: Adam learning rate (paper: 5e-4).
    :param blocks: indices of the adapted blocks (default all; InfLoRA-b5: ``range(5)``).
    :param eps_base: DualGPM threshold after the first task (0.98).
    :param eps_final: threshold reached at t = T (1.0).
    :param num_classes: size of the global label space (default ``model.num_classes``).
    :param cov_batches: batches of ``eval_mb_size`` used for each covariance (default all).
    :param kwargs: :class:`~.base.PEFTTemplate` keywords (``train_mb_size``,
        ``train_epochs``, ``eval_mb_size``, ``device``, ``plugins``, ``evaluator``, ...).
    """

    def __init__(self, *, model: nn.Module, rank: int = 10, n_experiences: Optional[int] = None,
                 lr: float = 5e-4, blocks: Optional[Iterable[int]] = None,
                 eps_base: float = 0.98, eps_final: float = 1.0,
                 num_classes: Optional[int] = None, cov_batches: Optional[int] = None,
                 **kwargs):
        self.layers = add_kv_lora(model, blocks)
        freeze(model)
        heads = TaskHeads(model.head.in_features if isinstance(model.head, nn.Linear)
                          else model.num_features, num_classes or model.num_classes)
        model.head = heads
        model.num_classes = heads.num_classes  # what token adapters read as the label space
        super().__init__(model=model, heads=heads, lr=lr, **kwargs)
        self.rank = rank
        self.n_experiences = n_experiences
        self.eps_base, self.eps_final = eps_base, eps_final
        self.cov_batches = cov_batches
        self.memory = DualGPM()
        self.tasks_done = 0

    @torch.no_grad()
    def input_covariances(self, experience) -> List[Tensor]:
        """Per-layer ``E[x x^T]`` of the experience's (eval-transformed) training inputs."""
        was_training = self.model.training
        self.model.eval()
        loader = DataLoader(experience.dataset.eval(), batch_size=self.eval_mb_size)
        with InputCovariance(self.layers) as rec:
            for i, (x, *_) in enumerate(loader):
                if self.cov_batches is not None and i >= self.cov_batches:
                    break
                self.model.forward_features(x.to(self.device))
        self.model.train(was_training)
        return rec.covariances()

    def design_branch(self, i: int, cov: Tensor) -> Tensor:
        """``B_t`` of layer ``i`` from its input covariance of the new task."""
        return design_down(self.memory.project(i, cov.double()), self.rank,
                           float(torch.linalg.matrix_norm(cov.double(), 2)))

    def prepare_experience(self, experience) -> None:
        if self.n_experiences is None:
            self.n_experiences = len(experience.origin_stream)
        covs = self.input_covariances(experience)
        for i, layer in enumerate(self.layers):
            layer.add_branch(self.design_branch(i, covs[i]))
        self.heads.add_head(experience.classes_in_this_experience)

    def finish_experience(self, experience) -> None:
        eps = dualgpm_threshold(self.tasks_done, self.n_experiences, self.eps_base, self.eps_final)
        self.memory.update(self.input_covariances(experience), eps)
        for layer in self.layers:
            layer.merge()
        self.tasks_done += 1

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "bases": list(self.memory.bases),
                "modes": list(self.memory.modes), "tasks_done": self.tasks_done,
                "n_experiences": self.n_experiences}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory.bases, self.memory.modes = list(state["bases"]), list(state["modes"])
        self.tasks_done, self.n_experiences = state["tasks_done"], state["n_experiences"]
