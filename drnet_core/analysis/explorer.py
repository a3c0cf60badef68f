"""Single-image inspection: prediction, routing trace, counterfactuals and Gumbel-noise resampling.

`inspect_input` returns a frozen `drnet_core.inspection.Inspection`, per-cell routing taken straight from
the model's trace; the figures draw it without the model.

Everything here runs one input (or copies of it) through a loaded DRNet in eval mode without ever
changing the model: counterfactuals go through `branch_overrides` (force a branch on or off, see
`Cell.forward`), and Gumbel noise is drawn per request from an explicit seed (`DRNet.sample_noise`),
never from the global RNG. `gumbel_softmax_demo` recomputes the recalibration of Sec. 3.2 of the
paper (softmax((logits + g) / tau)) for one connection, for the teaching view.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from drnet_core.inspection import CellRouting, Inspection
from drnet_core.net.model import DRNet, RoutingTrace
from drnet_core.analysis.payoff import entropy_bits


def _check_input(model: DRNet, model_input: torch.Tensor) -> torch.Tensor:
    config = model.config
    expected = (config.in_channels, config.image_size, config.image_size)
    if model_input.ndim == 3:
        model_input = model_input.unsqueeze(0)
    if model_input.ndim != 4 or tuple(model_input.shape[1:]) != expected:
        raise ValueError(f"model input must have shape (N, {expected[0]}, {expected[1]}, {expected[2]}), "
                         f"got {tuple(model_input.shape)}")
    return model_input.to(model.device)


def cell_routings(trace: RoutingTrace, row: int = 0) -> tuple[CellRouting, ...]:
    """One instance's routing from a model's trace, per cell. The trace is already per cell, so nothing is
    split again: the flat `path_masks` / `branch_weights` are concatenations of these same arrays."""
    return tuple(CellRouting(weights=weights[row].float().cpu().numpy(), executed=executed[row].cpu().numpy(),
                             router_logits=logits[row].float().cpu().numpy())
                 for weights, executed, logits in zip(trace.weights, trace.executed, trace.logits))


@torch.inference_mode()
def inspect_input(model: DRNet, model_input: torch.Tensor, *, tau: float, threshold: float,
                  noise_seed: int | None = None, branch_overrides: list[torch.Tensor] | None = None) -> Inspection:
    """Run one normalised input (1, C, H, W) and return its prediction, routing and cost."""
    x = _check_input(model, model_input)[:1]
    noise = model.sample_noise(1, noise_seed) if noise_seed is not None else None
    logits, trace = model(x, tau=tau, threshold=threshold, gumbel_noise=noise, branch_overrides=branch_overrides)
    probabilities = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    return Inspection(
        architecture=model.architecture(),
        cells=cell_routings(trace),
        probabilities=probabilities,
        prediction=int(probabilities.argmax()),
        mflops=float(model.mflops_per_instance(trace)[0]),
        active_params=float(model.active_params_per_instance(trace)[0]),
        dense_mflops=model.dense_mflops(),
    )


def branch_overrides(model: DRNet, force_on: list[int] = (), force_off: list[int] = ()) -> list[torch.Tensor] | None:
    """Per-cell override tensors from flat branch positions (indices into `model.architecture().branch_labels()`,
    as in `Inspection.flat`).

    A branch named in both lists is an error rather than a silent choice of one.
    """
    both = set(force_on) & set(force_off)
    if both:
        labels = model.architecture().branch_labels()
        raise ValueError("a branch cannot be forced on and off at once: " + ", ".join(labels[i] for i in sorted(both)))
    if not force_on and not force_off:
        return None
    flat = torch.zeros(sum(c * b for c, b in model.routing_shape()), dtype=torch.int64)
    flat[list(force_on)] = 1
    flat[list(force_off)] = -1
    return model.split_per_cell(flat)


def path_key(mask: np.ndarray) -> str:
    """A compact, stable name for a selected-branch pattern (hex of its bits)."""
    bits = "".join("1" if v else "0" for v in np.asarray(mask, dtype=bool))
    return f"{int(bits, 2):0{(len(bits) + 3) // 4}x}" if bits else "0"


@torch.inference_mode()
def noise_path_frequencies(model: DRNet, model_input: torch.Tensor, *, tau: float, threshold: float,
                           samples: int, seed: int, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Run the same input `samples` times with fresh seeded Gumbel noise; one row per distinct path.

    Columns: path (rank, 1 = most frequent), count, share, mflops, branches (how many ran),
    prediction (most common predicted class on that path), key (hex of the pattern).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    x = _check_input(model, model_input)[:1].expand(samples, -1, -1, -1).contiguous(memory_format=torch.channels_last)
    noise = model.sample_noise(samples, seed)
    logits, trace = model(x, tau=tau, threshold=threshold, gumbel_noise=noise)
    masks = trace.path_masks().cpu()
    predictions = logits.argmax(dim=1).cpu()
    mflops = model.mflops_per_instance(trace).cpu()
    patterns, inverse, counts = torch.unique(masks, dim=0, return_inverse=True, return_counts=True)
    rows = []
    for p in range(len(patterns)):
        members = inverse == p
        rows.append({
            "count": int(counts[p]),
            "share": float(counts[p]) / samples,
            "mflops": float(mflops[members][0]),
            "branches": int(patterns[p].sum()),
            "prediction": class_names[int(torch.mode(predictions[members]).values)],
            "key": path_key(patterns[p].numpy()),
            "mask": patterns[p].numpy(),
        })
    table = pd.DataFrame(rows).sort_values(["count", "mflops"], ascending=[False, True]).reset_index(drop=True)
    table.insert(0, "path", np.arange(1, len(table) + 1))
    return table


def noise_selection_frequency(table: pd.DataFrame) -> np.ndarray:
    """How often each branch ran across the samples of a `noise_path_frequencies` table: (total branches,)
    in [0, 1], in `path_masks` order (split it per cell with `DRNet.split_per_cell`)."""
    masks = np.stack(table["mask"].to_list()).astype(float)  # (paths, total branches)
    return table["share"].to_numpy(dtype=float) @ masks


def path_entropy_bits(table: pd.DataFrame) -> float:
    """Entropy in bits of the path distribution of a `noise_path_frequencies` table: 0 when the noise never
    changes the path, log2(samples) when every sample takes its own."""
    shares = torch.tensor(table["share"].to_numpy(dtype=float))
    return entropy_bits(shares[shares > 0])


def gumbel_softmax_demo(logits: np.ndarray, taus: np.ndarray, *, threshold: float,
                        noise: np.ndarray | None = None) -> pd.DataFrame:
    """Weights softmax((logits + noise) / tau) of one connection over a range of temperatures.

    Returns a long table: tau, branch index, weight, selected (weight >= threshold).
    """
    logits = np.asarray(logits, dtype=np.float64)
    noisy = logits + (0.0 if noise is None else np.asarray(noise, dtype=np.float64))
    rows = []
    for tau in np.asarray(taus, dtype=np.float64):
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        weights = torch.softmax(torch.from_numpy(noisy / tau), dim=0).numpy()
        for branch, weight in enumerate(weights):
            rows.append({"tau": float(tau), "branch": branch, "weight": float(weight),
                         "selected": bool(weight >= threshold)})
    return pd.DataFrame(rows)


def connection_logits(inspection: Inspection, cell: int, connection: int) -> np.ndarray:
    """The router logits of one connection of one inspected input: (branches,)."""
    if not 0 <= cell < len(inspection.cells):
        raise ValueError(f"the model has {len(inspection.cells)} cells, got cell {cell}")
    per_connection = inspection.cells[cell].router_logits
    if not 0 <= connection < len(per_connection):
        raise ValueError(f"cell {cell + 1} has {len(per_connection)} connections, got connection {connection}")
    return per_connection[connection]


def gallery_positions(labels: torch.Tensor, per_class: int = 2) -> list[int]:
    """The first `per_class` positions of every class in a set, ordered by class: a small gallery."""
    labels = torch.as_tensor(labels)
    positions = []
    for cls in sorted(torch.unique(labels).tolist()):
        positions += (labels == cls).nonzero().squeeze(1)[:per_class].tolist()
    return positions


def connection_noise(model: DRNet, seed: int, cell: int, connection: int) -> np.ndarray:
    """The seeded Gumbel noise `sample_noise(1, seed)` adds to one connection's logits: (branches,)."""
    noise = model.sample_noise(1, seed)
    return noise[cell][0, connection].cpu().numpy()


def connection_tau_sensitivity(logits: np.ndarray, taus: np.ndarray, *, noise: np.ndarray | None = None) -> float:
    """How far one connection's weights move over `taus`: the total variation of every branch's weight
    along the temperatures, summed over branches. Near 0 for a saturated connection (one branch keeps
    weight ~1 over the whole range); 2 x (1 - 1 / branches) for one that goes from one branch taking all
    the weight to uniform weights."""
    table = gumbel_softmax_demo(logits, np.sort(np.asarray(taus, dtype=np.float64)), threshold=1.0, noise=noise)
    weights = table.pivot(index="tau", columns="branch", values="weight").to_numpy()
    return float(np.abs(np.diff(weights, axis=0)).sum())


def most_tau_sensitive_connection(inspection: Inspection, taus: np.ndarray) -> tuple[int, int]:
    """(cell, connection), 0-based, of the inspected input whose weights move most over `taus`
    (`connection_tau_sensitivity` of its router logits): the connection where changing tau shows the most.
    Ties go to the first in cell, then connection order."""
    best, best_score = (0, 0), -1.0
    for cell, routing in enumerate(inspection.cells):
        for connection, logits in enumerate(routing.router_logits):
            score = connection_tau_sensitivity(logits, taus)
            if score > best_score + 1e-12:
                best, best_score = (cell, connection), score
    return best
