"""The unfamiliar-input warning's calibration: fitted, stored beside the app, looked up by checkpoint sha256.

`calibrate` fits the Mahalanobis feature model (`ood.FeatureModel`) on the training images a checkpoint's
run trained on and sets the threshold on the images it held out, so that 95% of them pass; the test split
takes no part. `python -m drnet_core calibrate-ood` writes it to `assets/ood/<sha256>.npz` (the bundled
checkpoints' calibrations ship there) or to `--output`.

`find_calibration` looks for a stored one: `assets/ood/<sha256>.npz`, then `<checkpoint>.ood.npz` beside
the checkpoint. A checkpoint with none (an upload, a new training run) is calibrated on the fly by
`calibration_or_none` when its training images are installed, from a sample of `ON_THE_FLY_FIT_IMAGES`
of them; without them the warning is unavailable and says so.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drnet_core.data.datasets import DatasetError, dataset_of, to_model_input
from drnet_core.analysis.evaluate import default_setting
from drnet_core.data.held_out import training_split
from drnet_core.net.model import DRNet
from drnet_core.analysis.ood import TARGET_TPR, FeatureModel, all_scores, forward_outputs, threshold_at_tpr
from drnet_core.resources import ASSETS

log = logging.getLogger(__name__)

CALIBRATION_DIR = ASSETS / "ood"
METHOD = "mahalanobis"
ON_THE_FLY_FIT_IMAGES = 12_000  # a sample of the training images: about a fifth of a full fit's time


@dataclass
class Calibration:
    checkpoint_sha256: str
    tau: float             # the setting the features are taken at: the checkpoint's default
    threshold: float
    score_threshold: float  # a score above it is flagged unfamiliar
    feature_model: FeatureModel
    fit_images: int
    held_out_images: int
    held_out_tpr: float    # share of the held-out images that pass (about TARGET_TPR)

    def scores(self, model: DRNet, inputs: torch.Tensor) -> np.ndarray:
        """The Mahalanobis score of every normalised input, at the calibration's setting."""
        outputs = forward_outputs(model, inputs, tau=self.tau, threshold=self.threshold)
        return all_scores(outputs, self.feature_model)[METHOD]

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.score_threshold

    def describe(self) -> dict:
        return {"method": METHOD, "checkpoint_sha256": self.checkpoint_sha256, "tau": self.tau,
                "threshold": self.threshold, "score_threshold": self.score_threshold, "fit_images": self.fit_images,
                "held_out_images": self.held_out_images, "held_out_tpr": self.held_out_tpr}


def calibrate(model: DRNet, meta: dict, checkpoint_sha256: str, *, data_dir: str | None = None,
              fit_limit: int | None = None, seed: int = 0) -> Calibration:
    """Fit on the run's training images (a seeded sample of `fit_limit`, when given), threshold on its held-out ones."""
    if not meta.get("train_config"):
        raise DatasetError("this checkpoint records no training run, so which images it trained on and held out "
                           "is unknown")
    full_train, held_out_idx = training_split(meta, data_dir)
    if not len(held_out_idx):
        raise DatasetError("this checkpoint's run held out no training images, so the warning has nothing to "
                           "calibrate on without touching the test split")
    dataset = dataset_of(meta)
    trained = torch.ones(len(full_train), dtype=torch.bool)
    trained[held_out_idx] = False
    fit_idx = trained.nonzero().squeeze(1)
    if fit_limit is not None and fit_limit < len(fit_idx):
        order = torch.randperm(len(fit_idx), generator=torch.Generator().manual_seed(seed))
        fit_idx = fit_idx[order[:fit_limit]].sort().values
    tau, threshold = default_setting(meta)
    fit = forward_outputs(model, to_model_input(full_train.images[fit_idx], dataset), tau=tau, threshold=threshold)
    feature_model = FeatureModel.fit(fit.features, full_train.labels[fit_idx].numpy())
    held_out = forward_outputs(model, to_model_input(full_train.images[held_out_idx], dataset), tau=tau,
                               threshold=threshold)
    held_out_scores = all_scores(held_out, feature_model)[METHOD]
    score_threshold = threshold_at_tpr(held_out_scores, TARGET_TPR)
    return Calibration(checkpoint_sha256, tau, threshold, score_threshold, feature_model, len(fit_idx),
                       len(held_out_idx), float((held_out_scores <= score_threshold).mean()))


def save_calibration(calibration: Calibration, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # a file object: np.savez would otherwise append .npz to the name
        np.savez_compressed(handle, means=calibration.feature_model.means,
                            precision=calibration.feature_model.precision,
                            description=np.array(json.dumps(calibration.describe())))
    return path


def load_calibration(path: str | os.PathLike) -> Calibration:
    with np.load(path, allow_pickle=False) as archive:
        info = json.loads(str(archive["description"]))
        feature_model = FeatureModel(archive["means"], archive["precision"])
    if info.get("method") != METHOD:
        raise ValueError(f"{path}: a calibration of {info.get('method')!r}, expected {METHOD!r}")
    return Calibration(info["checkpoint_sha256"], info["tau"], info["threshold"], info["score_threshold"],
                       feature_model, info["fit_images"], info["held_out_images"], info["held_out_tpr"])


def stored_path(checkpoint_sha256: str) -> Path:
    return CALIBRATION_DIR / f"{checkpoint_sha256}.npz"


def find_calibration(checkpoint_sha256: str, checkpoint_path: str | os.PathLike | None = None) -> Calibration | None:
    """A stored calibration of this checkpoint (matched by sha256), or None."""
    candidates = [stored_path(checkpoint_sha256)]
    if checkpoint_path is not None:
        candidates.append(Path(f"{checkpoint_path}.ood.npz"))
    for candidate in candidates:
        if candidate.is_file():
            calibration = load_calibration(candidate)
            if calibration.checkpoint_sha256 == checkpoint_sha256:
                return calibration
            log.warning("%s calibrates another checkpoint (sha256 %s); ignored", candidate,
                        calibration.checkpoint_sha256[:12])
    return None


def calibration_or_none(model: DRNet, meta: dict, checkpoint_sha256: str, checkpoint_path=None, *,
                        data_dir: str | None = None) -> tuple[Calibration | None, str]:
    """(calibration, where it came from), or (None, why the warning is unavailable)."""
    stored = find_calibration(checkpoint_sha256, checkpoint_path)
    if stored is not None:
        return stored, "stored calibration"
    try:
        calibration = calibrate(model, meta, checkpoint_sha256, data_dir=data_dir, fit_limit=ON_THE_FLY_FIT_IMAGES)
    except DatasetError as error:
        return None, f"unfamiliar-input warning unavailable: no stored calibration for this checkpoint and {error}"
    return calibration, (f"calibrated now on {calibration.fit_images:,} training images and "
                         f"{calibration.held_out_images:,} held-out ones (no stored calibration)")
