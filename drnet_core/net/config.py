"""The architecture's description.

A `ModelConfig` fully describes an architecture: a checkpoint stores it as a plain dict so that
`torch.load(..., weights_only=True)` can read it back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from drnet_core.net.ops import OPS

# Every registered branch type, in the registry's order (which is the router's logit order).
DEFAULT_BRANCHES = tuple(OPS)


def known_keys_only(config_class, raw: dict, what: str) -> dict:
    """A copy of `raw`, refusing keys that are not fields of `config_class` (a file from elsewhere)."""
    unknown = set(raw) - {f.name for f in fields(config_class)}
    if unknown:
        raise ValueError(f"unknown {what} keys: {sorted(unknown)}")
    return dict(raw)


@dataclass(frozen=True)
class ModelConfig:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    stem_channels: int = 16
    # One entry per stage; every stage opens with a stride-2 reduction, so the stem alone sees
    # full resolution (28 -> 14 -> 7 -> 4 for Fashion-MNIST).
    stage_channels: tuple[int, ...] = (32, 64, 128)
    cells_per_stage: int = 1
    # Intermediate nodes per cell: node j receives a routed connection from every earlier node.
    nodes_per_cell: int = 2
    branches: tuple[str, ...] = DEFAULT_BRANCHES
    # The RouterNet is GAP -> Linear(C, hidden) -> ReLU -> Linear(hidden, connections * branches);
    # 16 hidden units keep its cost well under 1% of a dense cell.
    router_hidden: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        values = known_keys_only(cls, raw, "model config")
        for key in ("stage_channels", "branches"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
