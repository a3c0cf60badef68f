"""Unfamiliar-input scores: is this input unlike the images the network was trained on?

Three scores from one routed pass at the checkpoint's default setting, each oriented so that higher
means more unfamiliar:

* max-softmax: 1 - the largest class probability (Hendrycks & Gimpel 2017);
* energy: -logsumexp of the logits (Liu et al. 2020);
* Mahalanobis: the smallest distance of the penultimate features (after the head's global pool) to a
  class mean, under one covariance shared by the classes (Lee et al. 2018). Means and covariance are
  fitted on the training images the checkpoint's run trained on.

A calibration (`drnet_core.analysis.ood_calibration`) fixes the threshold on the images the run held out of
training so that 95% of them pass; the test split takes no part. Scores are always computed at the
calibration's setting, whatever setting the caller audits at, because the features depend on the path.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from drnet_core.defaults import BATCH_SIZE
from drnet_core.net.model import DRNet

SCORES = ("max_softmax", "energy", "mahalanobis")
TARGET_TPR = 0.95  # share of in-distribution images the threshold lets pass


@dataclass
class ForwardOutputs:
    logits: np.ndarray    # (N, classes)
    features: np.ndarray  # (N, D) the classifier's input: the globally pooled last feature map


def _classifier(model: DRNet) -> torch.nn.Linear:
    return model.head[-1]


@torch.inference_mode()
def forward_outputs(model: DRNet, inputs: torch.Tensor, *, tau: float, threshold: float,
                    batch_size: int = BATCH_SIZE) -> ForwardOutputs:
    """Logits and penultimate features of every normalised input, routed at (tau, threshold), no noise.

    The features are read by a forward pre-hook on the classifier; the model may be shared by threads
    (the app's sessions), so the hook keeps only what this thread's own calls pass it.
    """
    owner = threading.get_ident()
    captured: list[torch.Tensor] = []

    def keep_input(_module, args):
        if threading.get_ident() == owner:
            captured.append(args[0].detach().float().cpu())

    handle = _classifier(model).register_forward_pre_hook(keep_input)
    logits = []
    try:
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start:start + batch_size].to(model.device)
            out, _ = model(batch, tau=tau, threshold=threshold)
            logits.append(out.float().cpu())
    finally:
        handle.remove()
    if not logits:
        classes = _classifier(model).out_features
        return ForwardOutputs(np.zeros((0, classes), np.float32),
                              np.zeros((0, _classifier(model).in_features), np.float32))
    return ForwardOutputs(torch.cat(logits).numpy(), torch.cat(captured).numpy())


def max_softmax_score(logits: np.ndarray) -> np.ndarray:
    return 1.0 - torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).max(dim=1).values.numpy()


def energy_score(logits: np.ndarray) -> np.ndarray:
    return -torch.logsumexp(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()


@dataclass
class FeatureModel:
    """Class means (classes, D) and the shared precision (D, D) of the penultimate features."""

    means: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> "FeatureModel":
        labels = np.asarray(labels)
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        # Ledoit-Wolf shrinkage: 192 dimensions from a few thousand images per class is no problem, but a
        # smaller training run (or a wider network) would leave the plain covariance near-singular.
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        return cls(means.astype(np.float64), precision.astype(np.float64))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N,) the smallest squared Mahalanobis distance to a class mean."""
        diffs = features[:, None, :].astype(np.float64) - self.means[None, :, :]  # (N, classes, D)
        squared = np.einsum("ncd,de,nce->nc", diffs, self.precision, diffs)
        return squared.min(axis=1)


def all_scores(outputs: ForwardOutputs, feature_model: FeatureModel | None) -> dict[str, np.ndarray]:
    """Every score of `SCORES` (Mahalanobis only with a feature model), higher = more unfamiliar."""
    scores = {"max_softmax": max_softmax_score(outputs.logits), "energy": energy_score(outputs.logits)}
    if feature_model is not None:
        scores["mahalanobis"] = feature_model.distance(outputs.features)
    return scores


def threshold_at_tpr(in_distribution_scores: np.ndarray, tpr: float = TARGET_TPR) -> float:
    """The score below or at which `tpr` of the in-distribution images fall: they pass, the rest are flagged."""
    return float(np.quantile(np.asarray(in_distribution_scores, dtype=np.float64), tpr, method="higher"))


def detection_metrics(in_scores: np.ndarray, out_scores: np.ndarray, threshold: float) -> dict:
    """AUROC (unfamiliar = positive), the false-positive rate at 95% TPR of the in-distribution images
    (the share of unfamiliar ones that pass, as the OOD literature reports it) and the flagged shares."""
    from sklearn.metrics import roc_auc_score

    in_scores, out_scores = np.asarray(in_scores), np.asarray(out_scores)
    truth = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    auroc = float(roc_auc_score(truth, np.concatenate([in_scores, out_scores])))
    return {"auroc": auroc, "fpr_at_95_tpr": float((out_scores <= threshold_at_tpr(in_scores)).mean()),
            "flagged_in": float((in_scores > threshold).mean()), "flagged_out": float((out_scores > threshold).mean()),
            "n_in": int(len(in_scores)), "n_out": int(len(out_scores))}
