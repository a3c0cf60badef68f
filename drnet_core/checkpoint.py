"""Saving and safely loading DRNet checkpoints.

A checkpoint is a plain dict of tensors and primitives, so it loads with
`torch.load(..., weights_only=True)`: a file that tries to run code on unpickling is refused, never
executed. Loading validates the format, the config and every tensor's shape against the architecture
before any weight is used, and reports one `CheckpointError` naming the file and the problem.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .config import ModelConfig
from .model import DRNet

FORMAT = "drnet-explorer/1"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "drnet_fashion.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is unsafe, unreadable or does not match the DRNet architecture."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: DRNet, meta: dict, *, write_sha256: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": {**meta, "torch_version": str(torch.__version__)},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the real name
    if write_sha256:
        Path(str(path) + ".sha256").write_text(f"{sha256_of(path)}  {path.name}\n")
    return path


def read_checkpoint(source) -> dict:
    """torch.load with weights_only=True, turning every failure into a CheckpointError."""
    name = getattr(source, "name", None) or str(source)
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{name}: refused, the file holds objects other than tensors and plain data "
                              f"(safe loading only accepts weights): {str(error).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{name}: not a DRNet Explorer checkpoint (format {found!r}, expected {FORMAT!r}); "
                              "a bare state dict of another model cannot be used.")
    return payload


def build_from_payload(payload: dict, name: str) -> DRNet:
    try:
        config = ModelConfig.from_dict(payload["config"])
        model = DRNet(config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{name}: invalid model config: {error}") from None
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: has no state_dict.")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{name}: weights do not match the architecture in its config "
                              f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                              f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}).")
    for key, tensor in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{name}: tensor {key} has shape {shape}, the architecture needs {tuple(tensor.shape)}.")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{name}: tensor {key} holds NaN or infinite values.")
    model.load_state_dict(state)
    return model


def load_checkpoint(source=None, *, device: str | torch.device = "cpu", verify_sha256: bool = True):
    """Returns (model in eval mode on `device`, metadata dict). `source`: path or binary file object."""
    source = SHIPPED_CHECKPOINT if source is None else source
    name = getattr(source, "name", None) or str(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"{name}: no such checkpoint file.")
        digest_file = Path(str(path) + ".sha256")
        if verify_sha256 and digest_file.is_file():
            recorded = digest_file.read_text().split()[0] if digest_file.read_text().strip() else ""
            actual = sha256_of(path)
            if recorded != actual:
                raise CheckpointError(f"{name}: sha256 mismatch, the file changed since it was recorded in "
                                      f"{digest_file.name} (recorded {recorded[:12]}..., actual {actual[:12]}...).")
    payload = read_checkpoint(source)
    model = build_from_payload(payload, name)
    meta = dict(payload.get("meta") or {})
    return model.to(device).eval(), meta


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
