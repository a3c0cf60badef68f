"""The resume file (`<output>.resume.pt`): what a training run needs to continue after an interruption.

It is written after every epoch, by rank 0 alone, through the same atomic write as a checkpoint, and
holds the configs (a run resumes only under the same ones), the weights, optimizer and schedule, the
epoch history, the "time" cost table and the random-number state of every process.
"""
from __future__ import annotations

from pathlib import Path

import torch

from drnet_core.net.checkpoint import write_atomically
from drnet_core.training.config import TrainConfig
from drnet_core.analysis.distributed import DistributedContext


def resume_path_for(output: Path) -> Path:
    return output.with_name(output.name + ".resume.pt")


def write_resume_state(path: Path, *, model_config, train_config: TrainConfig, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, scheduler, epoch: int, history: list,
                       branch_ms: list | None, rng_states: dict) -> None:
    write_atomically({"model_config": model_config.to_dict(), "train_config": train_config.to_dict(),
                      "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                      "branch_ms": branch_ms, "rng": torch.get_rng_state(), **rng_states}, path)


def read_resume_state(resume_path: Path, model_config, train_config: TrainConfig,
                      ctx: DistributedContext) -> dict | None:
    """The resume file's contents, or None to start afresh.

    With several processes rank 0 reads it and sends it to the others, so the file need only exist
    where rank 0 runs and every replica resumes from the same state.
    """
    state, problem = None, None
    if ctx.is_main and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        # from_dict fills fields added since the file was written with their defaults.
        saved_train = TrainConfig.from_dict(state["train_config"]).to_dict()
        if state["model_config"] != model_config.to_dict() or saved_train != train_config.to_dict():
            state, problem = None, f"{resume_path} belongs to a run with a different config; delete it to start afresh."
    if ctx.distributed:
        state, problem = ctx.broadcast_object((state, problem))
    if problem:
        raise ValueError(problem)
    return state


def rng_states_per_rank(ctx: DistributedContext) -> dict:
    """Every rank's RNG state for the resume file (several processes only).

    Each rank draws its own Gumbel noise; resuming all of them from rank 0's state would make
    the ranks draw identical noise. One process keeps the file as it always was ("rng" alone).
    """
    if not ctx.distributed:
        return {}
    mine = {"cpu": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return {"rng_per_rank": ctx.all_gather_object(mine)}


def reseed_for_other_world_size(seed: int, rank: int, epoch: int) -> int:
    """Global-RNG seed of a rank > 0 resuming a file written by another number of processes: the file
    holds rank 0's state only, and a rank needs noise of its own; the epoch term (a prime factor larger
    than any seed offset) keeps each resumed epoch's stream apart from the run's first one."""
    return seed + rank + 1_000_003 * epoch


def restore_rng(state: dict, ctx: DistributedContext, seed: int) -> None:
    per_rank = state.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == ctx.world_size:
        mine = per_rank[ctx.rank]
        torch.set_rng_state(mine["cpu"])
        if "cuda" in mine and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], ctx.device)
        return
    torch.set_rng_state(state["rng"])
    if ctx.rank:
        torch.manual_seed(reseed_for_other_world_size(seed, ctx.rank, int(state["epoch"])))
