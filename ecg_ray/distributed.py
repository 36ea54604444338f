"""Collective helpers for losses that span data-parallel workers (torch.distributed only, no Ray).

Every helper is a no-op (identity, rank 0 of 1) when torch.distributed is unavailable or no
process group is initialised, so the losses run unchanged in a single process and in tests.

Ray Train starts one process per worker and initialises the default process group before the
training function runs; these helpers use that default group. Workers may hold batches of
different sizes along dim 0 (for example the last, short batch of an epoch): the gathers
exchange the sizes first and pad, so only the trailing dimensions must agree. That exchange
reads the sizes back to the host (a device sync per gather); inside :func:`equal_batches`
(the training loops, whose ``drop_last`` streams give every worker the same batch size) it is
skipped and every worker's size is taken to be the local one.

Gradient convention of :func:`gather_with_grad` (used by NT-Xent and batch-negative CPC): each
worker computes its own loss ``L_r`` on the gathered tensor and calls ``backward()``. The
backward pass sums the incoming gradients over all workers and returns this worker's slice, so
worker ``r`` receives ``d(sum_s L_s) / d x_r``, the gradient of the *sum* of all workers'
losses with respect to its own inputs. DDP then averages parameter gradients over the ``W``
workers, which yields the gradient of ``mean_s L_s``; when every worker holds the same number of
samples, that mean is exactly the single-process loss on the concatenated batch, so training
with ``W`` workers follows the same gradient as one process with the global batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_no_grad",
    "all_reduce_max",
    "all_reduce_sum",
    "equal_batches",
    "gather_with_grad",
    "is_distributed",
    "rank",
    "row_offset",
    "world_size",
]


#: True inside equal_batches(): every worker's tensors have the same dim-0 size
_EQUAL_BATCHES = False


@contextlib.contextmanager
def equal_batches() -> Iterator[None]:
    """Within this block every worker passes tensors of the same dim-0 size to every gather.

    The gathers then skip the size exchange (one collective and a host read each). Every worker
    must enter the block for the same steps; a size that differs would make the gather fail (or
    hang) instead of padding, so only loops that drop short batches use it.
    """
    global _EQUAL_BATCHES
    previous, _EQUAL_BATCHES = _EQUAL_BATCHES, True
    try:
        yield
    finally:
        _EQUAL_BATCHES = previous


def is_distributed() -> bool:
    """True when a default process group exists (the collectives below then communicate)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of workers in the default group; 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This worker's rank in the default group; 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def row_offset(n_local: int, device: torch.device | str = "cpu") -> int:
    """Index of this worker's first row in a rank-ordered gather of tensors with ``n_local`` rows.

    Equal to ``rank() * n_local`` when all workers hold the same number of rows; computed from
    the exchanged sizes so that unequal batches line up too. ``device`` must be one the backend
    can communicate on (a CUDA device for NCCL). 0 without a process group.
    """
    if world_size() == 1:
        return 0
    return sum(_gather_sizes(n_local, torch.device(device))[:rank()])


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    """Dim-0 sizes of every worker's tensor (one small collective, none inside equal_batches)."""
    if _EQUAL_BATCHES:
        return [n] * world_size()
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _all_gather_cat(t: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate ``t`` from all workers along dim 0, allowing different dim-0 sizes.

    ``dist.all_gather`` needs equal shapes, so tensors are padded to the largest size and the
    padding is cut off again after the exchange.
    """
    t = t.contiguous()
    sizes = _gather_sizes(t.shape[0], t.device)
    largest = max(sizes)
    if t.shape[0] < largest:
        pad = t.new_zeros((largest - t.shape[0], *t.shape[1:]))
        padded = torch.cat([t, pad], dim=0)
    else:
        padded = t
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded)
    return torch.cat([b[:s] for b, s in zip(buffers, sizes, strict=True)], dim=0), sizes


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the gradient over workers and keeps this worker's slice.

    Why the sum: worker ``s`` computes ``L_s`` from the gathered tensor, which contains worker
    ``r``'s rows, so ``d L_s / d x_r`` is the slice ``r`` of the gradient that arrives on worker
    ``s``. The gradient of the total ``sum_s L_s`` with respect to ``x_r`` is therefore the sum
    of those slices over ``s`` (an all-reduce), restricted to rows of ``r``. Returning only the
    local gradient slice would drop every other worker's dependence on ``x_r`` (the negatives
    this worker contributes elsewhere), which is the classic silent bug of naive gathers.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        gathered, sizes = _all_gather_cat(t)
        me = rank()
        ctx.start = sum(sizes[:me])
        ctx.stop = ctx.start + sizes[me]
        return gathered

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce is in place; autograd's buffer may be shared
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.stop]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` along dim 0 over all workers (rank order), differentiably.

    The backward pass gives this worker ``d(sum of all workers' losses) / d t`` (see the module
    docstring for why that is the right quantity under DDP's gradient averaging). Identity
    without a process group or with a single worker.
    """
    if world_size() == 1:
        return t
    return _GatherWithGrad.apply(t)


@torch.no_grad()
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all workers, as a new tensor (the input is not modified); no gradient."""
    out = t.detach().clone()
    if world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


@torch.no_grad()
def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``t`` over all workers, as a new tensor; no gradient."""
    out = t.detach().clone()
    if world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


@torch.no_grad()
def all_gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` along dim 0 over all workers (rank order), without gradient."""
    if world_size() == 1:
        return t.detach()
    return _all_gather_cat(t.detach())[0]
