"""`drnet trace`: one row per image, as Parquet or CSV with a metadata sidecar, agreeing with `evaluate --json`;
and the pandas example of docs/NOTEBOOK.md run as written."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from drnet_core import cli
from drnet_core.analysis.audit import cost_per_class
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, save_checkpoint, sha256_of
from drnet_core.data.datasets import FASHION_CLASSES
from drnet_core.analysis.trace import read_trace

from helpers import run_cli, tiny_model

ROOT = Path(__file__).resolve().parent.parent
ROW_COLUMNS = ["index", "true_class", "true", "predicted_class", "predicted", "confidence", "correct", "mflops",
               "active_params", "path_id", "path_pattern"]
SETTING = ["--tau", "1.5", "--threshold", "0.1", "--limit", "200"]


def evaluate_json(capsys, *args: str) -> dict:
    assert cli.main(["evaluate", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def shipped_keys() -> list[str]:
    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    return model.architecture().branch_keys()


def test_parquet_trace_has_the_documented_columns_and_equals_evaluate(tmp_path, capsys, shipped_keys):
    output = tmp_path / "trace.parquet"
    assert cli.main(["trace", *SETTING, "--output", str(output)]) == 0
    capsys.readouterr()
    summary = evaluate_json(capsys, *SETTING)
    table, metadata = read_trace(output)

    assert list(table.columns) == (ROW_COLUMNS + [f"weight:{key}" for key in shipped_keys]
                                   + [f"ran:{key}" for key in shipped_keys])
    assert len(table) == summary["n"] == 200
    assert table["correct"].mean() == pytest.approx(summary["accuracy"], abs=1e-6)
    assert table["mflops"].mean() == pytest.approx(summary["mean_mflops"], rel=1e-12)
    assert table["active_params"].mean() == pytest.approx(summary["mean_active_params"], rel=1e-12)
    assert table["path_pattern"].nunique() == table["path_id"].nunique() == summary["distinct_paths"]
    ran = table.filter(regex="^ran:")
    assert ran.mean().to_numpy() == pytest.approx(list(summary["branch_usage"].values()))
    per_class = table.groupby("true")["mflops"].mean()
    for name, row in summary["per_class"].items():
        assert per_class[name] == pytest.approx(row["mean_mflops"], rel=1e-12)
    assert (table["true"] == np.asarray(FASHION_CLASSES, dtype=object)[table["true_class"]]).all()
    assert (table["correct"] == (table["true_class"] == table["predicted_class"])).all()

    assert metadata["checkpoint_sha256"] == sha256_of(SHIPPED_CHECKPOINT)
    assert (metadata["tau"], metadata["threshold"], metadata["split"]) == (1.5, 0.1, "test")
    assert metadata["torch_version"] == torch.__version__ and metadata["dataset"] == summary["dataset"]
    assert pd.read_parquet(output).attrs["drnet_trace"] == metadata  # the file carries it too


def test_path_pattern_packs_the_ran_columns_and_the_same_path_costs_the_same(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", tiny_model(), {"default_tau": 1.0, "default_threshold": 0.05})
    output = tmp_path / "trace.csv"
    assert cli.main(["trace", "--checkpoint", str(checkpoint), "--limit", "60", "--output", str(output)]) == 0
    table, metadata = read_trace(output)
    assert len(table) == 60 and metadata["checkpoint"] == str(checkpoint)
    ran = table.filter(regex="^ran:")
    assert (ran.dtypes == bool).all() and table["path_pattern"].map(type).eq(str).all()
    width = ran.shape[1]
    for pattern, row in zip(table["path_pattern"], ran.to_numpy()):
        bits = bin(int(pattern, 16))[2:].zfill(len(pattern[2:]) * 4)[:width]
        assert [bit == "1" for bit in bits] == row.tolist()
    assert table.groupby("path_pattern")["mflops"].nunique().eq(1).all()
    assert table["path_pattern"].nunique() > 1  # the tiny model routes these images along several paths
    weights = table.filter(regex="^weight:").to_numpy()
    assert ((weights >= 0) & (weights <= 1)).all()
    # path_id ranks paths by frequency: 0 is the most common.
    assert table["path_id"].value_counts().idxmax() == 0


@pytest.mark.parametrize("output, message", [("trace.txt", "must end in .parquet or .csv"),
                                             ("missing/trace.csv", "does not exist")])
def test_trace_refuses_an_output_it_cannot_write_in_one_line(tmp_path, output, message):
    result = run_cli("trace", "--limit", "5", "--output", str(tmp_path / output))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def notebook_code() -> str:
    text = (ROOT / "docs" / "NOTEBOOK.md").read_text()
    return "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))


def test_notebook_example_runs_and_reproduces_the_cost_audit_per_class(tmp_path, monkeypatch):
    assert cli.main(["trace", "--limit", "300", "--output", str(tmp_path / "trace.parquet")]) == 0
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {}
    exec(compile(notebook_code(), "docs/NOTEBOOK.md", "exec"), namespace)  # noqa: S102 (the docs' own example)
    table = namespace["table"]
    expected = cost_per_class(table)["mean MFLOPs"]  # what the app's cost audit plots
    assert namespace["per_class"].index.tolist() == expected.index.tolist()
    assert namespace["per_class"].to_numpy() == pytest.approx(expected.to_numpy())
    assert (tmp_path / "per_class_mflops.png").stat().st_size > 0


def test_trace_refuses_an_empty_selection_in_one_line(tmp_path):
    result = run_cli("trace", "--limit", "0", "--output", str(tmp_path / "trace.csv"))
    assert result.returncode == 2 and "--limit: must be at least 1" in result.stderr and "Traceback" not in result.stderr
