"""Saving and safely loading DRNet checkpoints.

A checkpoint is a plain dict {"format", "config", "state_dict", "meta"} of tensors and primitives,
so it loads with `torch.load(..., weights_only=True)`: a file that tries to run code on unpickling
is refused, never executed. Loading then checks, in order, and stops at the first problem with one
`CheckpointError` naming the file and the problem:

1. the recorded sha256 (a `<file>.sha256` beside it; the shipped checkpoint always has one);
2. that the bytes are a PyTorch file at all (empty, text, images... are named as such);
3. safe unpickling (code-running pickles refused; truncated or corrupt archives reported);
4. the container: our format and version, not a bare state dict or another program's checkpoint;
5. the config: known keys, known branches, sizes within what this tool builds (checked on the
   `meta` device, so a config declaring an enormous model allocates nothing);
6. every tensor's name, shape and kind against the architecture, finite values, non-negative
   BatchNorm variances (a negative one turns every output into NaN);
7. the metadata the app relies on (default tau > 0, threshold in [0, 1], class names).
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch

from drnet_core.net import folding
from drnet_core.net.config import ModelConfig
from drnet_core.data.datasets import ASSETS
from drnet_core.net.model import DRNet, checkpoint_filter_fn

logger = logging.getLogger(__name__)

FORMAT = "drnet-explorer/1"
_FORMAT_FAMILY = "drnet-explorer/"
SHIPPED_CHECKPOINT = ASSETS / "drnet_fashion.pt"
# Every trained DRNet that ships, by what it is (docs/MODEL.md), the shipped one first.
BUNDLED_CHECKPOINTS = {
    "Shipped": SHIPPED_CHECKPOINT,
    # The shipped network before its routers were retrained: the same weights under the joint objective.
    "Earlier shipped, joint objective": ASSETS / "drnet_fashion_joint.pt",
    "With pooling branches": ASSETS / "drnet_fashion_pooling.pt",
    "Smaller (fashion preset)": ASSETS / "drnet_fashion_small.pt",
}

# What a PyTorch file starts with: a zip archive (torch.save since 1.6) or a protocol-2+ pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
# Limits on a config read from a file, far above any model this tool trains, so that a crafted
# config cannot make the loader build millions of modules.
_CONFIG_LIMITS = {"in_channels": 16, "image_size": 1024, "num_classes": 10_000, "stem_channels": 4096,
                  "cells_per_stage": 64, "nodes_per_cell": 16, "router_hidden": 4096}
_MAX_STAGES, _MAX_STAGE_CHANNELS = 8, 4096
_DECODE_ERRORS = (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError,
                  TypeError, AttributeError, struct.error, UnicodeDecodeError, OverflowError, MemoryError)


class CheckpointError(RuntimeError):
    """A checkpoint is unsafe, unreadable or does not match the DRNet architecture."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(payload: dict, path: Path) -> None:
    """torch.save through a temporary file renamed into place: an interrupted write never leaves a
    half-written file under the real name, and a reader sees the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def save_checkpoint(path: str | os.PathLike, model: DRNet, meta: dict, *, write_sha256: bool = True) -> Path:
    if folding.is_folded(model):
        raise ValueError("a network with folded batch norms is for inference only and cannot be saved as a checkpoint")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": {**meta, "torch_version": str(torch.__version__)},
    }
    write_atomically(payload, path)
    if write_sha256:
        Path(str(path) + ".sha256").write_text(f"{sha256_of(path)}  {path.name}\n")
    return path


def total_epochs(meta: dict) -> int | None:
    """Epochs since random initialisation behind a checkpoint, its warm-start parents' included;
    a checkpoint from before warm starts records only its own."""
    return meta.get("total_epochs", meta.get("epochs"))


# ---- reading the file ----------------------------------------------------------------------------

def _name_of(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)  # the full path (a Path's .name would drop the folder)
    if isinstance(source, (bytes, bytearray)):
        return "uploaded checkpoint"
    return str(getattr(source, "name", None) or "uploaded checkpoint")


def _leading_bytes(source, count: int = 2048) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return handle.read(count)
    position = source.tell()
    head = source.read(count)
    source.seek(position)
    return head


def _what_it_is(head: bytes) -> str:
    from drnet_core.data.images import describe_non_image, sniff_format  # the same sniffing as image uploads

    kind = sniff_format(head + b"\x00" * 8)
    return f"a {kind} image" if kind else describe_non_image(head)


def _unpickling_refusal(name: str, error: pickle.UnpicklingError) -> CheckpointError:
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return CheckpointError(
            f"{name}: refused, the file asks to import and run Python code ({found.group(1)}) when loaded. "
            "Safe loading accepts only tensors and plain data, so nothing in it was executed. "
            "Only open checkpoints written by `python -m drnet_core train`.")
    detail = next((line.strip() for line in text.splitlines()
                   if line.strip().startswith(("Unsupported", "Trying", "invalid"))), "unreadable pickle data")
    return CheckpointError(f"{name}: not a readable PyTorch checkpoint, its data is corrupt ({detail}).")


def read_checkpoint(source) -> dict:
    """torch.load with weights_only=True, turning every failure into a CheckpointError.

    Checks the container only (format, version, types), so DRNet and baseline checkpoints share it.
    """
    name = _name_of(source)
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(bytes(source))
    try:
        head = _leading_bytes(source)
    except OSError as error:
        raise CheckpointError(f"{name}: cannot be read ({error.strerror or error}).") from None
    if not head:
        raise CheckpointError(f"{name}: the file is empty (0 bytes); a DRNet checkpoint holds the model's weights.")
    if not head.startswith(_TORCH_MAGIC):
        raise CheckpointError(f"{name}: not a PyTorch checkpoint, it is {_what_it_is(head)}.")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _unpickling_refusal(name, error) from None
    except _DECODE_ERRORS as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint, the file is truncated or corrupt "
                              f"({first_line}).") from None
    _check_container(payload, name)
    return payload


def _check_container(payload, name: str) -> None:
    if not isinstance(payload, dict):
        raise CheckpointError(f"{name}: not a DRNet Explorer checkpoint, it holds a {type(payload).__name__} "
                              "instead of the checkpoint dictionary.")
    found = payload.get("format")
    if found is None:
        if payload and all(isinstance(value, torch.Tensor) for value in payload.values()):
            raise CheckpointError(f"{name}: a bare state dict ({len(payload)} tensors) of some model, not a DRNet "
                                  "Explorer checkpoint: it has no architecture config, so it cannot be used.")
        keys = ", ".join(sorted(map(str, payload))[:6])
        raise CheckpointError(f"{name}: a checkpoint from another program (keys: {keys}), not a DRNet "
                              f"Explorer checkpoint (format {FORMAT!r}).")
    if found != FORMAT:
        if isinstance(found, str) and found.startswith(_FORMAT_FAMILY):
            raise CheckpointError(f"{name}: checkpoint format version {found!r}, this version of DRNet Explorer "
                                  f"reads {FORMAT!r}; use the matching version of drnet_core, or retrain.")
        raise CheckpointError(f"{name}: not a DRNet Explorer checkpoint (format {found!r}, expected {FORMAT!r}).")
    for key, kind in (("config", dict), ("state_dict", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{name}: damaged checkpoint, its {key!r} entry is missing or not a dictionary.")
    if not isinstance(payload.get("meta", {}), dict):
        raise CheckpointError(f"{name}: damaged checkpoint, its 'meta' entry is not a dictionary.")


# ---- building and validating the model ----------------------------------------------------------

def _check_config_bounds(config: ModelConfig, name: str) -> None:
    for key, limit in _CONFIG_LIMITS.items():
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise CheckpointError(f"{name}: invalid model config, {key}={value!r} (must be an integer in 1..{limit}).")
    stages = config.stage_channels
    if not 1 <= len(stages) <= _MAX_STAGES or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= _MAX_STAGE_CHANNELS for c in stages):
        raise CheckpointError(f"{name}: invalid model config, stage_channels={stages!r} (1..{_MAX_STAGES} integers "
                              f"in 1..{_MAX_STAGE_CHANNELS}).")
    if not config.branches or not all(isinstance(b, str) for b in config.branches):
        raise CheckpointError(f"{name}: invalid model config, branches={config.branches!r}.")


def _architecture_of(payload: dict, name: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The config and the expected state dict, built on the meta device: no memory, no weights."""
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{name}: invalid model config: {error}") from None
    _check_config_bounds(config, name)
    try:
        with torch.device("meta"):
            skeleton = DRNet(config)
    except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError, IndexError, AssertionError) as error:
        raise CheckpointError(f"{name}: invalid model config, the architecture cannot be built: "
                              f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    return config, skeleton.state_dict()


def _check_weights(state: dict, expected: dict[str, torch.Tensor], name: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(map(str, set(state) - set(expected)))
    if missing or unexpected:
        raise CheckpointError(f"{name}: weights do not match the architecture in its config "
                              f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                              f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}); "
                              "it was saved from a different model.")
    for key, reference in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != reference.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{name}: tensor {key} has shape {shape}, the architecture needs "
                                  f"{tuple(reference.shape)}; it was saved from a different model.")
        if value.is_floating_point() != reference.is_floating_point() or value.is_complex():
            raise CheckpointError(f"{name}: tensor {key} holds {value.dtype}, the architecture needs {reference.dtype}.")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{name}: tensor {key} holds NaN or infinite values; the weights are damaged.")
        if key.endswith("running_var") and bool((value < 0).any()):
            raise CheckpointError(f"{name}: tensor {key} holds negative variances, which would turn every "
                                  "output into NaN; the weights are damaged.")


def build_from_payload(payload: dict, name: str) -> DRNet:
    """A DRNet with the payload's weights, after validating config and every tensor."""
    config, expected = _architecture_of(payload, name)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: has no state_dict.")
    state = checkpoint_filter_fn(state)  # an earlier layout's keys, renamed
    _check_weights(state, expected, name)
    model = DRNet(config)
    model.load_state_dict(state)
    return model


def _check_meta(meta: dict, config: ModelConfig, name: str) -> None:
    """The settings the app takes as slider defaults must be usable numbers."""
    tau = meta.get("default_tau")
    if tau is not None and not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise CheckpointError(f"{name}: metadata default_tau={tau!r} is not a positive number.")
    threshold = meta.get("default_threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise CheckpointError(f"{name}: metadata default_threshold={threshold!r} is not a number in [0, 1].")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != config.num_classes
                              or not all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{name}: metadata class_names must be {config.num_classes} strings.")


# ---- integrity ----------------------------------------------------------------------------------

def _verify_recorded_sha256(path: Path, name: str) -> None:
    """Raise CheckpointError when `path` no longer matches the digest in `path.sha256` (if there is one).

    torch loads a file with flipped bits in its weights without complaint, so the digest written at
    save time is the only way to notice a damaged or replaced asset before its numbers are reported.
    """
    digest_file = Path(str(path) + ".sha256")
    if not digest_file.is_file():
        if path.resolve() == SHIPPED_CHECKPOINT:
            logger.warning("%s: no %s beside it, its integrity cannot be checked", name, digest_file.name)
        return
    fields = digest_file.read_text(errors="replace").split()
    recorded = fields[0].lower() if fields else ""
    if not re.fullmatch(r"[0-9a-f]{64}", recorded):
        raise CheckpointError(f"{name}: {digest_file.name} does not hold a sha256 digest, the integrity of the "
                              "checkpoint cannot be checked.")
    actual = sha256_of(path)
    if recorded != actual:
        raise CheckpointError(f"{name}: sha256 mismatch, the file changed since it was recorded in "
                              f"{digest_file.name} (recorded {recorded[:12]}..., actual {actual[:12]}...). "
                              "It may be damaged or replaced; restore it or delete the stale .sha256.")


def read_verified_checkpoint(source, name: str, *, verify_sha256: bool = True, kind: str = "checkpoint") -> dict:
    """`read_checkpoint`, after checking that a path exists and still matches its recorded sha256."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"{name}: no such {kind} file.")
        if verify_sha256:
            _verify_recorded_sha256(path, name)
    return read_checkpoint(source)


def load_checkpoint(source=None, *, device: str | torch.device = "cpu", verify_sha256: bool = True,
                    fold_batch_norms: bool = False):
    """Returns (model in eval mode on `device`, metadata dict). `source`: path, binary file object or bytes.

    fold_batch_norms: fold them into the convolutions (`drnet_core.net.folding`), for a model that will
    only run inference; it then refuses to train or be saved.
    """
    source = SHIPPED_CHECKPOINT if source is None else source
    name = _name_of(source)
    payload = read_verified_checkpoint(source, name, verify_sha256=verify_sha256)
    model = build_from_payload(payload, name)
    meta = dict(payload.get("meta") or {})
    _check_meta(meta, model.config, name)
    model = model.to(device).eval()
    return (folding.fold_batch_norms(model) if fold_batch_norms else model), meta


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
