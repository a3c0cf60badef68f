"""CIFAR-10: the python-batch loader on files written in that exact format, its errors, and training on it."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from drnet_core import cli
from drnet_core.net.checkpoint import load_checkpoint
from drnet_core.net.config import ModelConfig
from drnet_core.training.config import PRESETS, TrainConfig
from drnet_core.data.datasets import CIFAR10_CLASSES, DatasetError, load_cifar10, load_split, to_model_input
from drnet_core.net.model import DRNet
from drnet_core.training.train import train

PER_BATCH = 12


def cifar_rows(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Rows as CIFAR-10 stores them (red plane, green plane, blue plane) with a class-dependent bright patch."""
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in rng.integers(0, 10, size=count)]
    images = rng.integers(0, 60, size=(count, 32, 32, 3), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index, 3 * label: 3 * label + 3, :, label % 3] = 250
    rows = images.transpose(0, 3, 1, 2).reshape(count, 3072)
    return rows, labels


def write_batch(path: Path, rows: np.ndarray, labels: list[int]) -> None:
    batch = {b"batch_label": path.name.encode(), b"labels": labels, b"data": rows,
             b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)  # the protocol of the distributed files


def write_fake_cifar(directory: Path, per_batch: int = PER_BATCH) -> dict[str, tuple[np.ndarray, list[int]]]:
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        rows, labels = cifar_rows(per_batch, seed)
        write_batch(directory / name, rows, labels)
        written[name] = (rows, labels)
    return written


def test_batches_load_in_order_with_exact_pixels(tmp_path):
    written = write_fake_cifar(tmp_path)
    train_set = load_cifar10("train", tmp_path)
    assert train_set.images.shape == (5 * PER_BATCH, 32, 32, 3) and train_set.images.dtype == torch.uint8
    assert train_set.labels.dtype == torch.int64 and train_set.dataset == "cifar10"
    assert "CIFAR-10 train split (60 images)" == train_set.name
    expected_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train_set.labels.tolist() == expected_labels
    # Pixel (row r, column c, channel k) of image i is byte k*1024 + r*32 + c of its row.
    rows = written["data_batch_2"][0]
    image = train_set.images[PER_BATCH + 4].numpy()
    for r, c, k in [(0, 0, 0), (5, 17, 1), (31, 31, 2), (12, 3, 2)]:
        assert image[r, c, k] == rows[4, k * 1024 + r * 32 + c]
    test = load_split("cifar10", "test", tmp_path)
    assert test.images.shape == (PER_BATCH, 32, 32, 3) and test.labels.tolist() == written["test_batch"][1]


def test_model_input_is_normalised_rgb(tmp_path):
    write_fake_cifar(tmp_path)
    inputs = to_model_input(load_cifar10("test", tmp_path).images, "cifar10")
    assert inputs.shape == (PER_BATCH, 3, 32, 32) and inputs.dtype == torch.float32
    assert float(inputs.abs().max()) < 5  # scaled by the per-channel statistics, not raw bytes


def test_missing_folder_says_where_to_get_the_data(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_cifar10("train", tmp_path / "absent")
    message = str(error.value)
    assert "absent" in message and "cifar-10-python.tar.gz" in message and "--data-dir" in message
    with pytest.raises(DatasetError, match="--data-dir"):
        load_cifar10("test", None)


def test_missing_batch_is_named(tmp_path):
    write_fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10("train", tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_width", "bad_labels", "not_a_dict"])
def test_corrupt_batch_gives_a_clear_error(tmp_path, damage):
    write_fake_cifar(tmp_path)
    target = tmp_path / "test_batch"
    rows, labels = cifar_rows(4, 99)
    if damage == "garbage":
        target.write_bytes(b"this is not a pickle at all")
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:500])
    elif damage == "wrong_width":
        write_batch(target, rows[:, :3000], labels)
    elif damage == "bad_labels":
        write_batch(target, rows, [0, 1, 12, 3])
    else:
        target.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar10("test", tmp_path)


def test_a_batch_that_would_run_code_is_refused(tmp_path):
    write_fake_cifar(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match="refused"):
        load_cifar10("test", tmp_path)
    assert not marker.exists()


def test_mobile_preset_takes_32px_rgb():
    config = PRESETS["cifar10-mobile"].model
    assert (config.in_channels, config.image_size, config.num_classes) == (3, 32, 10)


def test_training_on_cifar_batches_writes_a_usable_checkpoint(tmp_path):
    torch.set_num_threads(1)
    write_fake_cifar(tmp_path / "cifar", per_batch=16)
    model_config = ModelConfig(in_channels=3, image_size=32, stem_channels=4, stage_channels=(4, 8), router_hidden=4)
    train_config = TrainConfig(epochs=1, batch_size=16, val_size=16, threshold_warmup_epochs=0.5)
    output = tmp_path / "cifar_tiny.pt"
    meta = train(model_config, train_config, output, dataset="cifar10", data_dir=str(tmp_path / "cifar"),
                 progress=False)
    assert meta["dataset"] == "cifar10" and meta["class_names"] == list(CIFAR10_CLASSES)
    assert meta["train_images"] == 64 and meta["validation_images"] == 16
    assert meta["history"][0]["epoch"] == 1 and np.isfinite(meta["history"][0]["train_loss"])
    assert meta["test_default"]["n"] == 16 and "CIFAR-10 test split" in meta["test_default"]["dataset"]
    model, loaded = load_checkpoint(output)
    assert model.config == model_config and loaded["dataset"] == "cifar10"
    torch.manual_seed(train_config.seed)  # train() initialises with this seed
    initial = DRNet(model_config)
    assert not torch.equal(model.stem[0].weight, initial.stem[0].weight)  # the steps changed the weights


def test_cli_refuses_a_preset_that_does_not_fit_cifar(tmp_path, capsys):
    write_fake_cifar(tmp_path / "cifar")
    code = cli.main(["train", "--preset", "tiny", "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"),
                     "--output", str(tmp_path / "x.pt"), "--no-progress"])
    assert code == 2
    message = capsys.readouterr().err
    assert "3 channel" in message and "cifar10-mobile" in message


def test_cli_without_cifar_data_explains(tmp_path, capsys):
    code = cli.main(["train", "--preset", "cifar10-mobile", "--dataset", "cifar10", "--data-dir",
                     str(tmp_path / "none"), "--output", str(tmp_path / "x.pt")])
    assert code == 2
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err
