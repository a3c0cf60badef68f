"""The worst-case cost search: stays within its budget, never reports less than the clean cost, and forces
more cost than plain PGD on the expected cost."""
from __future__ import annotations

import json

import pytest
import torch

from drnet_core.analysis import sponge

from drnet_core.figures import sponge as sponge_figures
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from drnet_core.data.datasets import load_shipped_subset
from drnet_core.analysis.evaluate import default_setting


@pytest.fixture(scope="module")
def shipped():
    model, meta = load_checkpoint(SHIPPED_CHECKPOINT, fold_batch_norms=True)
    return model, *default_setting(meta)


def images(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8),
            torch.randint(0, 10, (count,), generator=generator))


@pytest.mark.parametrize("method", ["sponge", "plain"])
def test_search_stays_in_the_budget_and_the_pixel_range(method, shipped):
    model, tau, threshold = shipped
    pixels, labels = load_shipped_subset().images[:4], load_shipped_subset().labels[:4]
    result = sponge.sponge_search(model, pixels, labels, 4 / 255, tau=tau, threshold=threshold, steps=4,
                                  method=method)
    change = (result.forced_pixels - result.clean_pixels).abs().max()
    assert change <= 4 / 255 + 1e-6
    assert change > 0 or method == "sponge"  # the sponge search keeps the original where nothing costs more
    assert result.forced_pixels.min() >= 0 and result.forced_pixels.max() <= 1
    assert result.forced_mflops.max() <= result.dense_mflops + 1e-9


def test_sponge_keeps_the_costliest_iterate_so_it_never_lowers_the_cost(shipped):
    model, tau, threshold = shipped
    pixels, labels = images(4, seed=1)
    result = sponge.sponge_search(model, pixels, labels, 8 / 255, tau=tau, threshold=threshold, steps=3, restarts=2)
    assert (result.forced_mflops >= result.clean_mflops - 1e-9).all()
    summary = result.summary()
    for key in ("eps", "clean_mean_mflops", "forced_mean_mflops", "forced_max_mflops", "forced_accuracy"):
        assert key in summary
    json.dumps(summary)


def test_zero_budget_changes_nothing_and_bad_budgets_are_refused(shipped):
    model, tau, threshold = shipped
    pixels, labels = images(3)
    result = sponge.sponge_search(model, pixels, labels, 0.0, tau=tau, threshold=threshold)
    assert torch.equal(result.forced_mflops, result.clean_mflops)
    with pytest.raises(ValueError, match="eps must be in"):
        sponge.sponge_search(model, pixels, labels, 2.0, tau=tau, threshold=threshold)


def test_sweep_figure_draws_every_budget_and_the_dense_ceiling():
    rows = [{"eps": e, "clean_mean_mflops": 4.0, "forced_mean_mflops": 4 + 100 * e, "forced_max_mflops": 7.0,
             "forced_accuracy": 0.9 - e, "dense_mflops": 27.4} for e in (8 / 255, 2 / 255)]
    figure = sponge_figures.sponge_sweep_figure(rows)
    assert list(figure.data[1].x) == pytest.approx([2.0, 8.0])
    assert any("dense" in (a.text or "") for a in figure.layout.annotations)


@pytest.mark.slow
def test_shipped_sponge_forces_more_than_plain_pgd_on_a_small_subset(shipped):
    model, tau, threshold = shipped
    subset = load_shipped_subset()
    pixels, labels = subset.images[:24], subset.labels[:24]
    plain = sponge.sponge_search(model, pixels, labels, 8 / 255, tau=tau, threshold=threshold, method="plain")
    forced = sponge.sponge_search(model, pixels, labels, 8 / 255, tau=tau, threshold=threshold)
    assert forced.summary()["forced_mean_mflops"] > plain.summary()["forced_mean_mflops"]
    assert plain.summary()["forced_mean_mflops"] > plain.summary()["clean_mean_mflops"]
