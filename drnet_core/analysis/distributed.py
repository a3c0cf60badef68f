"""Several processes, one result: the torchrun process group and sharded evaluation.

`torchrun --nproc_per_node=N -m drnet_core <command>` starts N copies of the CLI with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set. `DistributedContext` reads them and joins
the process group (NCCL when the process owns a CUDA device, gloo on CPU); without them it is a
single process and every collective below is a no-op, so one code path serves both.

Sharded evaluation gives the same numbers as one process, bit for bit on the same kind of device:
the evaluation set is cut into the very batches a single process would run (`batch_size` each),
each rank runs a contiguous block of whole batches through `evaluate.run_routed`, with its slice of
Gumbel noise drawn for the whole set from the one seed, and the per-instance results are gathered
back in index order. Every summary is then computed from the same tensors a single process gets.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import fields
from datetime import timedelta

import torch
import torch.distributed as dist

from drnet_core.defaults import BATCH_SIZE
from drnet_core.analysis.evaluate import RoutedRun, run_routed
from drnet_core.net.model import DRNet

log = logging.getLogger(__name__)

# Per-instance fields of a RoutedRun, concatenated across ranks; the rest are the shared settings.
_INSTANCE_FIELDS = tuple(f.name for f in fields(RoutedRun) if f.name not in ("tau", "threshold", "noise_seed"))
class DistributedContext:
    """This process's place among the workers: rank and world size from torchrun, or 1 process.

    Joins the default process group when torchrun launched several processes and none exists yet,
    and leaves it in `close()` only if it joined it. CUDA device: `cuda:LOCAL_RANK` when CUDA is
    available (one GPU per process), else CPU.
    """

    def __init__(self, device: torch.device | str | None = None, *, timeout: timedelta = timedelta(minutes=30)):
        self.owns_group = False
        if dist.is_available() and dist.is_initialized():
            self.world_size, self.rank = dist.get_world_size(), dist.get_rank()
        else:
            self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
            self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        self.device = torch.device(device)
        # The device must be current before NCCL starts, or every rank would talk through GPU 0.
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend=self.backend, timeout=timeout)
            self.owns_group = True
            log.debug("rank %d of %d joined the %s process group", self.rank, self.world_size, self.backend)

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def quiet_other_ranks(self) -> None:
        """Only rank 0 reports progress; the others keep warnings and errors."""
        if not self.is_main:
            logging.getLogger("drnet_core").setLevel(logging.WARNING)

    # ---- collectives (no-ops for one process) ----------------------------------------------------

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, value=None, source: int = 0):
        """`value` from rank `source` on every rank (pickled; meant for small states and messages)."""
        if not self.distributed:
            return value
        holder = [value if self.rank == source else None]
        dist.broadcast_object_list(holder, src=source)
        return holder[0]

    def all_gather_object(self, value) -> list:
        """[value of rank 0, value of rank 1, ...] on every rank."""
        if not self.distributed:
            return [value]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_buffers(self, module: torch.nn.Module, source: int = 0) -> None:
        """Copy rank `source`'s buffers (batch-norm running statistics) to every rank.

        DistributedDataParallel broadcasts them at the start of each forward, so after the last
        step of an epoch every rank still holds its own update; evaluating or saving needs one copy.
        """
        if not self.distributed:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=source)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def state_fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---- sharded evaluation ------------------------------------------------------------------------

def shard_bounds(count: int, batch_size: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s block: whole batches of `batch_size`, spread as evenly as possible.

    Cutting only at batch boundaries means every rank runs exactly the batches a single process
    would run, which is what makes the gathered results identical to a single process's.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = -(-count // batch_size)
    first = rank * batches // world_size
    last = (rank + 1) * batches // world_size
    return min(first * batch_size, count), min(last * batch_size, count)


class _ShardModel:
    """The model as `run_routed` sees it on one shard: noise comes from the whole set's draw.

    run_routed draws Gumbel noise for the instances it is given; a shard must use its slice of
    the noise drawn for all `total` instances instead, or its instances would get other noise than
    in a single-process run. Everything else is the model itself.
    """

    def __init__(self, model: DRNet, start: int, total: int):
        self._model, self._start, self._total = model, start, total

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)

    def sample_noise(self, batch: int, seed: int) -> list[torch.Tensor]:
        everyone = self._model.sample_noise(self._total, seed)
        return [noise[self._start:self._start + batch] for noise in everyone]


def run_routed_sharded(model: DRNet, inputs: torch.Tensor, labels: torch.Tensor, *, tau: float, threshold: float,
                       noise_seed: int | None = None, batch_size: int = BATCH_SIZE, progress: bool = False,
                       branch_overrides: list[torch.Tensor] | None = None,
                       ctx: DistributedContext | None = None) -> RoutedRun:
    """`evaluate.run_routed` with the set split across the ranks of `ctx`; every rank gets the full run.

    A collective: every rank must call it with the same set and settings. With one process (or
    no `ctx`) it is exactly `run_routed`.
    """
    if ctx is None or not ctx.distributed:
        return run_routed(model, inputs, labels, tau=tau, threshold=threshold, noise_seed=noise_seed,
                          batch_size=batch_size, progress=progress, branch_overrides=branch_overrides)
    if len(inputs) == 0:
        raise ValueError("cannot evaluate an empty set")
    start, stop = shard_bounds(len(inputs), batch_size, ctx.world_size, ctx.rank)
    piece = None
    if stop > start:
        shard_model = _ShardModel(model, start, len(inputs)) if noise_seed is not None else model
        run = run_routed(shard_model, inputs[start:stop], labels[start:stop], tau=tau, threshold=threshold,
                         noise_seed=noise_seed, batch_size=batch_size, progress=progress and ctx.is_main,
                         branch_overrides=branch_overrides)
        piece = {name: getattr(run, name) for name in _INSTANCE_FIELDS}
    pieces = [p for p in ctx.all_gather_object(piece) if p is not None]  # rank order = index order
    gathered = {name: torch.cat([p[name] for p in pieces]) for name in _INSTANCE_FIELDS}
    return RoutedRun(**gathered, tau=tau, threshold=threshold, noise_seed=noise_seed)


def sweep_sharded(model: DRNet, inputs: torch.Tensor, labels: torch.Tensor, taus, thresholds, *,
                  progress: bool = False, batch_size: int = BATCH_SIZE,
                  ctx: DistributedContext | None = None) -> list[dict]:
    """`evaluate.sweep` with every setting's evaluation split across the ranks; same rows on every rank."""
    from drnet_core.analysis.evaluate import sweep, sweep_row

    if ctx is None or not ctx.distributed:
        return sweep(model, inputs, labels, taus, thresholds, progress=progress, batch_size=batch_size)
    from tqdm.auto import tqdm

    rows = []
    grid = [(float(t), float(h)) for t in taus for h in thresholds]
    for tau, threshold in tqdm(grid, desc="sweep", disable=not (progress and ctx.is_main)):
        run = run_routed_sharded(model, inputs, labels, tau=tau, threshold=threshold, batch_size=batch_size, ctx=ctx)
        rows.append(sweep_row(run, model))
    return rows
