"""A training run's configuration, and the named presets (an architecture with its training recipe).

A `TrainConfig` describes one training run; every field carries the help text of its command-line
flag (`drnet_core.training.options`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from drnet_core.defaults import SEED, VAL_SIZE
from drnet_core.net.config import ModelConfig
from drnet_core.training.options import tau_arg

COST_MEASURES = ("macs", "time")


def described(default, help: str, **extra):
    """A config field whose `help` (and optional `choices`, a tuple or a function returning one, and
    `parse`, the command-line parser) make its command-line flag (`drnet_core.training.options`)."""
    return field(default=default, metadata={"help": help, **extra})


def phase_names() -> tuple[str, ...]:
    from drnet_core.training.phases import PHASES  # here, not above: the registry imports the network, which imports this module

    return tuple(PHASES)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = described(24, "epochs to train")
    batch_size: int = described(128, "images per step (under torchrun, per process)")
    lr: float = described(0.05, "peak learning rate of the cosine schedule")
    momentum: float = described(0.9, "SGD (Nesterov) momentum")
    weight_decay: float = described(3e-4, "SGD weight decay")
    label_smoothing: float = described(0.1, "label smoothing of the cross-entropy")
    # Annealed geometrically from start to end over training.
    tau_start: float = described(1.5, "Gumbel-Softmax temperature at the start of training", parse=tau_arg)
    tau_end: float = described(0.5, "Gumbel-Softmax temperature at the end of training", parse=tau_arg)
    # Branches below it are skipped while training too, so the network learns to live with sparse
    # routing. It ramps up from 0 (dense) over the warm-up.
    train_threshold: float = described(0.2, "selection threshold while training, after the warm-up")
    threshold_warmup_epochs: float = described(2.0, "epochs over which the threshold ramps up from 0")
    # The expected cost term is the expected branch cost / worst case, in [0, 1].
    cost_weight: float = described(0.05, "weight of the expected-cost term")
    # "macs": the branch multiply-adds (the paper's FLOPs); "time": each branch's milliseconds measured
    # at the start of training on the training machine (`cost.measure_branch_ms`; the table is kept in
    # the resume file and the checkpoint). Under "macs" pooling and identity are free; under "time"
    # they cost what they cost.
    cost_measure: str = described("macs", "what the cost term counts: multiply-adds or measured time",
                                  choices=COST_MEASURES)
    # The balance term is 0 when a batch spreads its weight evenly over the branches, 1 when every
    # instance leans on the same one. Off for the shipped model: at 0.05 (with cost weight 0.02) it
    # multiplied the distinct paths but cost accuracy; see docs/MODEL.md.
    balance_weight: float = described(0.0, "weight of the branch-usage balance term")
    phase: str = described("joint", "what the run trains (drnet_core.training.phases)", choices=phase_names)
    # supernet: each branch of each connection is kept with probability `random_path_keep`,
    # independently per instance.
    random_paths: int = described(1, "supernet: random paths per step besides the dense and the cheapest")
    random_path_keep: float = described(0.5, "supernet: probability that a random path keeps a branch")
    # routers: (mean executed MFLOPs / target_mflops - 1)^2 weighted by budget_weight. A two-sided target,
    # not a linear price, which would drive every instance to the cheapest path.
    target_mflops: float | None = described(None, "routers: the mean executed MFLOPs the budget term aims at")
    budget_weight: float = described(1.0, "routers: weight of the budget term")
    # Binary cross-entropy between each instance's expected cost fraction and whether the cheapest
    # path misclassifies it (DS-Net's gate supervision): easy inputs are pulled to cheap paths, hard
    # ones to costly paths.
    gate_weight: float = described(0.0, "routers: weight of the gate supervision")
    # The test split is never used to choose tau/threshold.
    val_size: int = described(VAL_SIZE, "training images held out to choose the default tau and threshold")
    augment: bool = described(True, "random shifts and flips of the training images")
    # Zhong et al. 2020, on top of the shifts and flips.
    random_erasing: float = described(0.0, "probability that random erasing blanks a rectangle of a training "
                                           "image (0: off)")
    seed: int = described(SEED, "seed of the initial weights, the data order and the augmentation")
    limit: int | None = described(None, "use only the first N training images (smoke runs, tests)")
    # Continuing a finished run under a new objective costs a fraction of training from scratch.
    init_from: str | None = described(None, "start from this checkpoint's weights (same preset) with a fresh "
                                            "optimizer and schedule: fine-tune a finished run")
    # A network learns more from a stronger network's full output distribution than from labels alone
    # (Hinton et al. 2015); the static controls learn from the DRNet's own dense path this way.
    teacher: str | None = described(None, "distil from this finished DRNet checkpoint's dense path too: each step "
                                          "adds teacher_weight x KL(teacher || student) to its label loss")
    teacher_weight: float = described(1.0, "weight of the distillation term when --teacher is given")

    def __post_init__(self):
        if self.cost_measure not in COST_MEASURES:
            raise ValueError(f"cost_measure must be one of {COST_MEASURES}, got {self.cost_measure!r}")
        from drnet_core.training.phases import phase_named  # see phase_names

        phase_named(self.phase).check(self)
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"random_erasing must be in [0, 1], got {self.random_erasing}")
        if not 0.0 < self.random_path_keep < 1.0:
            raise ValueError(f"random_path_keep must be in (0, 1), got {self.random_path_keep}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""


PRESETS: dict[str, Preset] = {
    # The smaller Fashion-MNIST model (assets/drnet_fashion_small.pt): three cells at 14, 7 and 4 pixels.
    "fashion": Preset(ModelConfig(), TrainConfig(), "Fashion-MNIST, 3 cells at 14/7/4 px (32/64/128 channels)"),
    # The shipped model's architecture: 1.5x the channels of "fashion" throughout. Its lineage, from these
    # 36 epochs to the shipped routers, is `make train` (docs/MODEL.md).
    "fashion-wide": Preset(
        ModelConfig(stem_channels=24, stage_channels=(48, 96, 192), router_hidden=24),
        TrainConfig(epochs=36),
        "Fashion-MNIST, 3 cells at 14/7/4 px (48/96/192 channels)",
    ),
    # A model small enough for unit tests to build and train in seconds.
    "tiny": Preset(
        ModelConfig(stem_channels=4, stage_channels=(4, 8), router_hidden=4, image_size=28),
        TrainConfig(epochs=1, batch_size=32, val_size=64, limit=256, threshold_warmup_epochs=0.5),
        "unit-test sized",
    ),
    # The paper's mobile-sized CIFAR-10 setting: 32x32 RGB, three stages of two cells with three
    # intermediate nodes. Dense (every branch run): 128.7 M multiply-adds, 3,313,714 parameters, as
    # DRNet(config).dense_mflops() / dense_params() report. Meant for a GPU; see docs/SCALING.md.
    "cifar10-mobile": Preset(
        ModelConfig(
            in_channels=3,
            image_size=32,
            num_classes=10,
            stem_channels=48,
            stage_channels=(48, 96, 192),
            cells_per_stage=2,
            nodes_per_cell=3,
            router_hidden=32,
        ),
        TrainConfig(epochs=150, batch_size=128, lr=0.05, val_size=5000),
        "CIFAR-10, mobile setting (GPU)",
    ),
}


def preset(name: str, **train_overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    chosen = PRESETS[name]
    return replace(chosen, train=replace(chosen.train, **train_overrides)) if train_overrides else chosen
