"""The unfamiliar-input warning: scores, calibration (fit, threshold, storage, lookup) and, with the shipped
checkpoint's stored calibration, the acceptance on a small set of pictures the choice of score never saw."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from drnet_core.analysis import ood, ood_calibration

from drnet_core.data import ood_sets
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, sha256_of
from drnet_core.data.datasets import DatasetError, load_shipped_subset, to_model_input
from drnet_core.data.images import prepare_image
from helpers import tiny_model, write_fake_fashion


def test_scores_rank_a_confident_input_as_more_familiar():
    logits = np.array([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert ood.max_softmax_score(logits)[0] < ood.max_softmax_score(logits)[1]
    assert ood.energy_score(logits)[0] < ood.energy_score(logits)[1]


def test_mahalanobis_distance_is_zero_at_a_class_mean_and_grows_away():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (200, 4)), rng.normal(5, 1, (200, 4))])
    labels = np.repeat([0, 1], 200)
    model = ood.FeatureModel.fit(features, labels)
    near, far = model.distance(model.means[:1]), model.distance(np.full((1, 4), 40.0))
    assert near[0] == pytest.approx(0.0, abs=1e-9) and far[0] > 100


def test_threshold_lets_the_target_share_pass():
    scores = np.arange(1000, dtype=float)
    threshold = ood.threshold_at_tpr(scores)
    assert (scores <= threshold).mean() == pytest.approx(0.95, abs=0.002)
    metrics = ood.detection_metrics(scores, scores + 2000, threshold)
    assert metrics["auroc"] == 1.0 and metrics["fpr_at_95_tpr"] == 0.0 and metrics["flagged_out"] == 1.0


def test_features_are_the_classifier_input():
    model = tiny_model()
    inputs = torch.randn(5, 1, 28, 28)
    outputs = ood.forward_outputs(model, inputs, tau=1.0, threshold=0.3, batch_size=2)
    linear = model.head[-1]
    expected = outputs.features @ linear.weight.detach().numpy().T + linear.bias.detach().numpy()
    np.testing.assert_allclose(expected, outputs.logits, rtol=1e-4, atol=1e-4)


def test_calibration_round_trips_and_is_found_by_sha256(tmp_path, monkeypatch):
    data = write_fake_fashion(tmp_path / "fashion", train=120, test=10)
    meta = {"train_config": {"val_size": 40, "seed": 0}, "default_tau": 1.0, "default_threshold": 0.3}
    calibration = ood_calibration.calibrate(tiny_model(), meta, "cd" * 32, data_dir=str(data))
    assert (calibration.fit_images, calibration.held_out_images) == (80, 40)
    assert calibration.held_out_tpr >= 0.95
    monkeypatch.setattr(ood_calibration, "CALIBRATION_DIR", tmp_path / "ood")
    ood_calibration.save_calibration(calibration, ood_calibration.stored_path("cd" * 32))
    found = ood_calibration.find_calibration("cd" * 32)
    assert found.score_threshold == calibration.score_threshold
    np.testing.assert_allclose(found.feature_model.precision, calibration.feature_model.precision)
    assert ood_calibration.find_calibration("ef" * 32) is None


def test_without_a_calibration_or_training_images_the_warning_says_it_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(ood_calibration, "CALIBRATION_DIR", tmp_path / "ood")
    calibration, why = ood_calibration.calibration_or_none(tiny_model(), {}, "ab" * 32)
    assert calibration is None and "unavailable" in why and "no training run" in why
    with pytest.raises(DatasetError):
        ood_calibration.calibrate(tiny_model(), {"train_config": {"val_size": 10}}, "ab" * 32,
                                  data_dir=str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def shipped():
    model, _ = load_checkpoint(SHIPPED_CHECKPOINT, fold_batch_norms=True)
    calibration = ood_calibration.find_calibration(sha256_of(SHIPPED_CHECKPOINT))
    assert calibration is not None, "the shipped checkpoint's calibration must ship in assets/ood/"
    return model, calibration


def flagged_share(model, calibration, inputs: torch.Tensor) -> float:
    return float(calibration.flags(calibration.scores(model, inputs)).mean())


def test_shipped_warning_passes_garments_and_flags_what_it_never_tuned_on(shipped):
    model, calibration = shipped
    garments = load_shipped_subset()
    assert flagged_share(model, calibration, to_model_input(garments.images[:400])) <= 0.10
    for kind, least in (("photo:flower", 0.8), ("photo:grace_hopper", 0.8), ("digits", 0.8), ("noise:gaussian", 0.95),
                        ("noise:salt_and_pepper", 0.95)):
        pictures = ood_sets.pictures_of_kind(kind, 40, seed=7)
        inputs = torch.cat([prepare_image(picture).model_input for picture in pictures])
        assert flagged_share(model, calibration, inputs) >= least, kind
