"""Checkpoint attacks and damage: every one is refused with one CheckpointError naming the file.

The code-execution tests first prove the crafted file really runs code under an unsafe
`torch.load(weights_only=False)`, so the refusal is not vacuous.
"""
from __future__ import annotations

import io
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from drnet_core.net.checkpoint import (BUNDLED_CHECKPOINTS, FORMAT, SHIPPED_CHECKPOINT, CheckpointError,
                                   load_checkpoint, read_checkpoint, save_checkpoint, sha256_of)
from drnet_core.training.config import PRESETS
from drnet_core.net.model import DRNet
from helpers import tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---- crafted pickles -------------------------------------------------------------------------

class CreatesMarkerWithOpen:
    """Unpickling this calls builtins.open(marker, 'w'): a file appears if code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class CreatesMarkerWithShell:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CreatesMarkerWithExec:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def valid_payload(model: DRNet | None = None) -> dict:
    model = model or tiny_model()
    return {"format": FORMAT, "config": model.config.to_dict(),
            "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
            "meta": {"default_tau": 0.5, "default_threshold": 0.2}}


def write(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def malicious_files(tmp_path: Path) -> list[tuple[str, Path, Path]]:
    """(label, crafted file, marker its code would create)."""
    files = []
    for gadget in (CreatesMarkerWithOpen, CreatesMarkerWithShell, CreatesMarkerWithExec):
        marker = tmp_path / f"pwned_{gadget.__name__}"
        # 1. torch.save zip format, the gadget is the whole payload
        files.append((f"zip-{gadget.__name__}", write(tmp_path / f"zip_{gadget.__name__}.pt", gadget(marker)),
                      marker))
    # 2. the gadget hidden inside an otherwise valid checkpoint's metadata
    marker = tmp_path / "pwned_hidden"
    payload = valid_payload()
    payload["meta"]["note"] = CreatesMarkerWithOpen(marker)
    files.append(("hidden-in-meta", write(tmp_path / "hidden.pt", payload), marker))
    # 3. a legacy (non-zip) pickle stream
    marker = tmp_path / "pwned_legacy"
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"format": FORMAT, "x": CreatesMarkerWithOpen(marker)}, protocol=2))
    files.append(("legacy-pickle", legacy, marker))
    return files


def test_crafted_pickles_are_refused_and_never_executed(tmp_path):
    for label, path, marker in malicious_files(tmp_path):
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        assert not marker.exists(), f"{label}: code ran during safe loading"
        message = str(caught.value)
        assert str(path) in message and "refused" in message and "nothing in it was executed" in message, label


def test_crafted_pickles_really_run_code_when_loaded_unsafely(tmp_path):
    """Non-vacuity: the same files do execute their payload under an unsafe load.

    The payloads only create an empty marker file inside tmp_path, so running them here is harmless.
    """
    for label, path, marker in malicious_files(tmp_path):
        try:
            torch.load(path, weights_only=False)
        except Exception:  # noqa: BLE001 - the payload's return value may not unpickle into a dict; irrelevant
            pass
        assert marker.exists(), f"{label}: the crafted file is not actually malicious"


def test_refusal_names_the_blocked_global(tmp_path):
    path = write(tmp_path / "shell.pt", CreatesMarkerWithShell(tmp_path / "m"))
    with pytest.raises(CheckpointError, match=r"\(posix\.system\)|\(os\.system\)|\(nt\.system\)"):
        load_checkpoint(path)


# ---- damaged files -----------------------------------------------------------------------------

@pytest.fixture
def good_checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "good.pt", tiny_model(), {"default_tau": 0.5, "default_threshold": 0.2},
                           write_sha256=False)


def test_a_good_checkpoint_loads(good_checkpoint):
    model, meta = load_checkpoint(good_checkpoint)
    assert isinstance(model, DRNet) and not model.training and meta["default_tau"] == 0.5


@pytest.mark.parametrize("fraction", [0.0005, 0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoint(good_checkpoint, tmp_path, fraction):
    data = good_checkpoint.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: max(1, int(len(data) * fraction))])
    with pytest.raises(CheckpointError, match=r"cut\.pt: .*(truncated or corrupt|corrupt)"):
        load_checkpoint(cut)


@pytest.mark.parametrize("where", ["pickle", "central_directory"])
def test_corrupt_bytes(good_checkpoint, tmp_path, where):
    data = bytearray(good_checkpoint.read_bytes())
    offset = data.find(b"data.pkl") + 40 if where == "pickle" else len(data) - 30
    for index in range(offset, offset + 16):
        data[index] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flipped\.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(bad)


@pytest.mark.parametrize("content, kind", [
    (b"", "empty"),
    (b"epoch,loss\n1,0.5\n", "text file"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "PNG image"),
    (b"%PDF-1.4\n", "PDF document"),
    (b"<!DOCTYPE html><html></html>", "HTML page"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, kind):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"model\.pt: .*{kind}"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nowhere.pt")


# ---- foreign and mismatched content ------------------------------------------------------------

def test_bare_state_dict_of_another_model(tmp_path):
    path = write(tmp_path / "linear.pt", torch.nn.Linear(784, 10).state_dict())
    with pytest.raises(CheckpointError, match=r"linear\.pt: a bare state dict \(2 tensors\)"):
        load_checkpoint(path)


def test_bare_state_dict_of_a_drnet(tmp_path):
    path = write(tmp_path / "bare.pt", tiny_model().state_dict())
    with pytest.raises(CheckpointError, match="bare state dict.*no architecture config"):
        load_checkpoint(path)


def test_another_programs_checkpoint(tmp_path):
    path = write(tmp_path / "other.pt", {"model": torch.nn.Linear(4, 2).state_dict(), "epoch": 3})
    with pytest.raises(CheckpointError, match=r"another program \(keys: epoch, model\)"):
        load_checkpoint(path)


def test_not_a_dictionary(tmp_path):
    path = write(tmp_path / "list.pt", [torch.zeros(3)])
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(path)


@pytest.mark.parametrize("found, match", [
    ("drnet-explorer/2", "format version 'drnet-explorer/2'"),
    ("drnet-explorer/0", "format version 'drnet-explorer/0'"),
    ("someone-else/1", "not a DRNet Explorer checkpoint"),
    (7, "not a DRNet Explorer checkpoint"),
])
def test_format_and_version_mismatch(tmp_path, found, match):
    payload = valid_payload()
    payload["format"] = found
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(write(tmp_path / "v.pt", payload))


def test_state_dict_of_a_different_architecture(tmp_path):
    payload = valid_payload()
    payload["config"] = PRESETS["fashion"].model.to_dict()  # weights are the tiny model's
    with pytest.raises(CheckpointError, match=r"mixed\.pt: weights do not match the architecture.*different model"):
        load_checkpoint(write(tmp_path / "mixed.pt", payload))


def test_wrong_shape(tmp_path):
    payload = valid_payload()
    key = "stem.0.weight"
    payload["state_dict"][key] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"tensor stem\.0\.weight has shape \(3, 3\)"):
        load_checkpoint(write(tmp_path / "shape.pt", payload))


def test_missing_and_unexpected_tensors(tmp_path):
    payload = valid_payload()
    payload["state_dict"].pop("stem.0.weight")
    payload["state_dict"]["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing \['stem\.0\.weight'\], unexpected \['extra\.weight'\]"):
        load_checkpoint(write(tmp_path / "keys.pt", payload))


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights(tmp_path, bad_value):
    payload = valid_payload()
    payload["state_dict"]["stem.0.weight"][0, 0, 0, 0] = bad_value
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(write(tmp_path / "nan.pt", payload))


def test_negative_batchnorm_variance(tmp_path):
    payload = valid_payload()
    payload["state_dict"]["stem.1.running_var"][0] = -1.0
    with pytest.raises(CheckpointError, match="negative variances"):
        load_checkpoint(write(tmp_path / "var.pt", payload))


def test_integer_weights_where_floats_belong(tmp_path):
    payload = valid_payload()
    payload["state_dict"]["stem.0.weight"] = payload["state_dict"]["stem.0.weight"].long()
    with pytest.raises(CheckpointError, match="holds torch.int64"):
        load_checkpoint(write(tmp_path / "int.pt", payload))


@pytest.mark.parametrize("change, match", [
    ({"stem_channels": 10**9}, "stem_channels=1000000000"),
    ({"nodes_per_cell": 100_000}, "nodes_per_cell=100000"),
    ({"stage_channels": [4] * 1000}, "stage_channels"),
    ({"stem_channels": 4.5}, "stem_channels=4.5"),
    ({"branches": ["rm_rf"]}, "cannot be built.*unknown branch 'rm_rf'"),
    ({"unknown_key": 1}, "unknown model config keys"),
])
def test_invalid_config_is_refused_before_building(tmp_path, change, match):
    payload = valid_payload()
    payload["config"] = {**payload["config"], **change}
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(write(tmp_path / "config.pt", payload))


@pytest.mark.parametrize("meta, match", [
    ({"default_tau": float("nan")}, "default_tau=nan"),
    ({"default_tau": 0.0}, "default_tau=0.0"),
    ({"default_threshold": 1.5}, "default_threshold=1.5"),
    ({"class_names": ["a", "b"]}, "class_names must be 10 strings"),
])
def test_unusable_metadata(tmp_path, meta, match):
    payload = valid_payload()
    payload["meta"] = meta
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(write(tmp_path / "meta.pt", payload))


def test_missing_container_entries(tmp_path):
    payload = valid_payload()
    del payload["state_dict"]
    with pytest.raises(CheckpointError, match="'state_dict' entry is missing"):
        read_checkpoint(write(tmp_path / "nostate.pt", payload))


# ---- uploads and integrity ---------------------------------------------------------------------

def test_uploaded_bytes_and_file_objects(good_checkpoint):
    data = good_checkpoint.read_bytes()
    model, _ = load_checkpoint(data)
    assert isinstance(model, DRNet)
    upload = io.BytesIO(data[:1000])
    upload.name = "from_a_friend.pt"
    with pytest.raises(CheckpointError, match=r"from_a_friend\.pt: .*truncated or corrupt"):
        load_checkpoint(upload)


@pytest.fixture
def shipped_copy(tmp_path) -> Path:
    copy = tmp_path / SHIPPED_CHECKPOINT.name
    shutil.copyfile(SHIPPED_CHECKPOINT, copy)
    shutil.copyfile(str(SHIPPED_CHECKPOINT) + ".sha256", str(copy) + ".sha256")
    return copy


@pytest.mark.parametrize("label", list(BUNDLED_CHECKPOINTS))
def test_every_bundled_checkpoint_matches_its_recorded_sha256(label):
    path = BUNDLED_CHECKPOINTS[label]
    recorded = Path(str(path) + ".sha256").read_text().split()
    assert recorded == [sha256_of(path), path.name]
    _, meta = load_checkpoint(path)  # verifies the digest too
    assert meta["test_default"]["accuracy"] > 0.9


def test_sha256_mismatch_of_a_modified_copy(shipped_copy):
    load_checkpoint(shipped_copy)  # an intact copy with its digest loads
    data = bytearray(shipped_copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the weights: torch would load it silently
    shipped_copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{shipped_copy.name}: sha256 mismatch"):
        load_checkpoint(shipped_copy)
    model, _ = load_checkpoint(shipped_copy, verify_sha256=False)  # an explicit opt-out still validates
    assert isinstance(model, DRNet)


def test_malformed_sha256_file(shipped_copy):
    Path(str(shipped_copy) + ".sha256").write_text("not a digest\n")
    with pytest.raises(CheckpointError, match="does not hold a sha256 digest"):
        load_checkpoint(shipped_copy)


def test_save_writes_a_digest_that_load_checks(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model(), {})
    assert Path(str(path) + ".sha256").read_text().split()[0] == sha256_of(path)
    load_checkpoint(path)
