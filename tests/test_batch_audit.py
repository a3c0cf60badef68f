"""Batch audits of people's own images: hostile archives, folders against zips, labels, CSV provenance."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from drnet_core.analysis import audit, batch_audit

from drnet_core.data import zip_intake
from drnet_core.data.datasets import FASHION_CLASSES
from drnet_core.data.images import MAX_UPLOAD_BYTES

from helpers import tiny_model


def png(seed: int = 0, size: int = 28) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def skipped_reasons(skipped) -> dict[str, str]:
    return {item.name: item.reason for item in skipped}


# ---- hostile archives: each refused or skipped with a message, the rest kept -------------------------

def test_zip_bomb_member_is_skipped_by_name_and_the_rest_kept():
    bomb = b"\0" * (MAX_UPLOAD_BYTES + 1024)  # 10 MB of zeros compresses to about 10 KB
    data = make_zip({"bomb.png": bomb, "good.png": png(1)})
    assert len(data) < 100_000
    members, skipped = zip_intake.read_zip(data, "set.zip")
    assert [m.name for m in members] == ["good.png"]
    assert "bomb.png" in skipped_reasons(skipped) and "MB" in skipped_reasons(skipped)["bomb.png"]


def test_zip_bomb_that_understates_its_size_is_caught_while_reading():
    data = bytearray(make_zip({"liar.png": b"\0" * (MAX_UPLOAD_BYTES + 4096), "good.png": png(2)}))
    # Rewrite the declared size of liar.png (central directory and local header) to 100 bytes.
    real = (MAX_UPLOAD_BYTES + 4096).to_bytes(4, "little")
    assert data.count(real) == 2
    data = data.replace(real, (100).to_bytes(4, "little"))
    members, skipped = zip_intake.read_zip(bytes(data), "liar.zip")
    assert [m.name for m in members] == ["good.png"]
    assert "liar.png" in skipped_reasons(skipped)


def test_archive_declaring_more_than_the_total_limit_is_refused_whole(monkeypatch):
    monkeypatch.setattr(zip_intake, "MAX_TOTAL_BYTES", 3 * 2**20)  # the same rule as 256 MB, cheaper to build
    entries = {f"{i}.png": b"\0" * 2**20 for i in range(4)}
    with pytest.raises(zip_intake.ArchiveRejected, match="declares 4 MB once decompressed, over the 3 MB"):
        zip_intake.read_zip(make_zip(entries), "huge.zip")


@pytest.mark.parametrize("name", ["../../etc/evil.png", "/etc/evil.png", "a/../../evil.png", "C:\\evil.png",
                                  "..\\..\\evil.png"])
def test_path_traversal_names_are_skipped_and_nothing_is_written(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    members, skipped = zip_intake.read_zip(make_zip({name: png(3), "fine/ok.png": png(4)}), "t.zip")
    assert [m.name for m in members] == ["fine/ok.png"]
    assert name in skipped_reasons(skipped)
    assert list(tmp_path.iterdir()) == []  # read in memory: nothing lands on disk


def test_nested_zips_open_one_level_and_deeper_ones_are_skipped():
    innermost = make_zip({"deep.png": png(5)})
    inner = make_zip({"Coat/inner.png": png(6), "deeper.zip": innermost})
    members, skipped = zip_intake.read_zip(make_zip({"outer.png": png(7), "inner.zip": inner}), "n.zip")
    assert sorted(m.name for m in members) == ["inner.zip/Coat/inner.png", "outer.png"]
    assert "nested" in skipped_reasons(skipped)["inner.zip/deeper.zip"]
    assert zip_intake.member_folder("inner.zip/Coat/inner.png") == "Coat"


def test_thousands_of_members_are_refused_with_the_limit_named():
    entries = {f"{i}.png": b"x" for i in range(zip_intake.MAX_MEMBERS + 1)}
    with pytest.raises(zip_intake.ArchiveRejected, match="5,001 files; at most 5,000"):
        zip_intake.read_zip(make_zip(entries, zipfile.ZIP_STORED), "many.zip")


def test_non_images_inside_are_reported_by_name_and_images_audited():
    data = make_zip({"notes.txt": b"hello", "page.html": b"<html></html>", "empty.png": b"", "Bag/a.png": png(8)})
    gathered = batch_audit.Gathered()
    gathered.add_archive(data, "mixed.zip")
    prepared = batch_audit.prepare_set(gathered, FASHION_CLASSES)
    assert prepared.names == ["Bag/a.png"] and prepared.labels.tolist() == [8]
    reasons = skipped_reasons(prepared.skipped)
    assert "a text file" in reasons["notes.txt"] and "HTML" in reasons["page.html"] and "empty" in reasons["empty.png"]


def test_an_unreadable_archive_is_reported_and_other_paths_still_audited(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    (tmp_path / "ok.png").write_bytes(png(9))
    gathered = batch_audit.gather_paths([tmp_path / "broken.zip", tmp_path / "ok.png", tmp_path / "missing.png"])
    assert [item.name for item in gathered.inputs] == ["ok.png"]
    reasons = skipped_reasons(gathered.skipped)
    assert "not a readable zip" in reasons[str(tmp_path / "broken.zip")]
    assert "no such file" in reasons[str(tmp_path / "missing.png")]


# ---- folders against zips ------------------------------------------------------------------------

def write_image_folder(root):
    for index, folder in enumerate(["Coat", "T-shirt_top", "Sandal", "photos", "7"]):
        (root / folder).mkdir(parents=True)
        for k in range(2):
            (root / folder / f"{k}.png").write_bytes(png(10 * index + k))
    (root / "loose.png").write_bytes(png(99, size=40))
    (root / "readme.txt").write_text("not an image")


def test_folder_and_zip_of_it_give_the_same_rows(tmp_path):
    root = tmp_path / "set"
    write_image_folder(root)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(root.rglob("*")):
            handle.write(path, path.relative_to(root).as_posix())
    model = tiny_model()
    tables = []
    for path in (root, archive):
        prepared = batch_audit.prepare_set(batch_audit.gather_paths([path]), FASHION_CLASSES)
        assert [s.name for s in prepared.skipped] == ["readme.txt"]
        tables.append(batch_audit.audit_inputs(model, prepared, FASHION_CLASSES, tau=1.0, threshold=0.3,
                                               calibration=None).drop(columns=["source"]))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    table = tables[0].set_index("input")
    assert table.loc["Coat/0.png", "true"] == "Coat" and table.loc["T-shirt_top/1.png", "true"] == "T-shirt/top"
    assert table.loc["7/0.png", "true"] == "Sneaker"  # a folder named by class index
    assert table.loc["photos/0.png", "true"] == batch_audit.UNLABELLED
    assert pd.isna(table.loc["loose.png", "correct"]) and not pd.isna(table.loc["Coat/0.png", "correct"])
    assert table["ood"].isna().all()  # no calibration: the flag is unknown, never a silent False


def test_batch_csv_carries_inputs_flags_and_full_provenance(tmp_path):
    write_image_folder(tmp_path / "set")
    prepared = batch_audit.prepare_set(batch_audit.gather_paths([tmp_path / "set"]), FASHION_CLASSES)
    table = batch_audit.audit_inputs(tiny_model(), prepared, FASHION_CLASSES, tau=1.0, threshold=0.3, calibration=None)
    run_like = audit.Setting(1.0, 0.3)
    origin = audit.provenance("ab" * 32, run_like, "your images", checkpoint_name="Shipped",
                              filters=audit.describe_filters(["Coat"], "correct"), timing_machine="")
    frame = pd.read_csv(io.BytesIO(audit.to_csv(table, origin)), keep_default_na=False)
    assert list(frame.columns[:2]) == ["input", "source"]
    for column in ("path", "ood", "ood_score") + audit.PROVENANCE_COLUMNS:
        assert column in frame.columns
    assert (frame["checkpoint_name"] == "Shipped").all() and (frame["app_version"] != "").all()
    assert frame["filters"].iloc[0] == "true class in Coat; answers correct"
    assert frame["created_utc"].iloc[0].endswith("+00:00")
    assert audit.csv_file_name("Earlier shipped, joint objective", 0.25, 0.3) == \
        "drnet_audit_earlier-shipped-joint-objective_tau0.25_threshold0.3.csv"


def test_cli_audit_json_rows_carry_ood_and_its_score(tmp_path, capsys):
    from drnet_core.cli import main

    write_image_folder(tmp_path / "set")
    assert main(["audit", str(tmp_path / "set"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 11 and [s["name"] for s in result["skipped"]] == ["readme.txt"]
    for row in result["rows"]:
        assert set(row) >= {"input", "predicted", "confidence", "mflops", "path", "ood", "ood_score", "true"}
        assert isinstance(row["ood"], bool) and isinstance(row["ood_score"], float)
    assert result["ood_calibration"]["method"] == "mahalanobis"


def test_cli_audit_of_nothing_usable_says_why(tmp_path, capsys):
    from drnet_core.cli import main

    (tmp_path / "a.txt").write_text("text")
    assert main(["audit", str(tmp_path / "a.txt")]) == 2
    assert "a text file" in capsys.readouterr().err
