"""Defaults defined once: the upload limit Streamlit enforces is the one the core reads, and the dataset
registry is what `train --dataset` offers; adding a dataset is one `data.DATASETS` entry."""
from __future__ import annotations

import json
import tomllib
from dataclasses import replace

import pytest

from drnet_core import cli

from drnet_core.data import datasets as data, images
from drnet_core.net.checkpoint import total_epochs
from drnet_core.training.config import PRESETS
from drnet_core.defaults import MAX_UPLOAD_MB
from drnet_core.resources import STREAMLIT_CONFIG

from helpers import write_fake_fashion


def test_streamlits_upload_limit_is_the_one_the_core_enforces():
    settings = tomllib.loads(STREAMLIT_CONFIG.read_text())
    assert settings["server"]["maxUploadSize"] == MAX_UPLOAD_MB
    assert images.MAX_UPLOAD_BYTES == MAX_UPLOAD_MB * 2**20
    with pytest.raises(images.UploadTooLarge, match=f"{MAX_UPLOAD_MB} MB upload limit"):
        images.decode_upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * images.MAX_UPLOAD_BYTES, "big.png")


def test_total_epochs_counts_the_lineage_and_falls_back_to_the_runs_own():
    assert total_epochs({"epochs": 4, "total_epochs": 40}) == 40
    assert total_epochs({"epochs": 4}) == 4
    assert total_epochs({}) is None


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_every_dataset_fits_the_preset_it_names(name):
    dataset = data.DATASETS[name]
    model = PRESETS[dataset.preset].model
    assert dataset.input_shape == (model.in_channels, model.image_size, model.image_size)
    assert len(dataset.class_names) == model.num_classes
    assert len(dataset.normalisation[0]) == len(dataset.normalisation[1]) == model.in_channels


def test_an_unknown_dataset_names_the_registered_ones():
    with pytest.raises(ValueError, match="choose one of fashion-mnist, cifar10"):
        data.load_split("mnist", "train")


TOY = "inverted-fashion"


def load_inverted(split, data_dir=None):
    """Fashion-MNIST with dark garments on white: a new dataset from an existing loader."""
    fashion = data.load_fashion_mnist(split, data_dir)
    return replace(fashion, images=255 - fashion.images, name=f"inverted {fashion.name}", dataset=TOY)


def test_a_toy_dataset_is_one_registry_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(data.DATASETS, TOY, data.Dataset(
        load_inverted, lambda data_dir=None: load_inverted("test", data_dir), ((0.7140,), (0.3530,)), (1, 28, 28),
        tuple(f"inverted {name}" for name in data.FASHION_CLASSES), "fashion"))
    fake = write_fake_fashion(tmp_path / "data", train=96, test=20)
    assert cli.main(["train", "--preset", "tiny", "--dataset", TOY, "--val-size", "32", "--data-dir", str(fake),
                     "--progress", "off", "--output", str(tmp_path / "toy.pt")]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["dataset"] == TOY and meta["class_names"][0] == "inverted T-shirt/top"
    assert meta["test_default"]["dataset"].startswith("inverted")
