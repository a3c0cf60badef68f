"""`pip install .`: a wheel built from this checkout, installed into a fresh virtual environment with no
package index, runs `drnet` from another folder with the shipped assets and serves the app.

Offline, the fresh environment sees the dependencies already installed for the tests (a .pth file naming
this interpreter's site-packages) and nothing else, so pip must find every declared dependency there.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from harness.chromium import free_port

pytestmark = pytest.mark.slow  # a real server, browser or virtual environment

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "drnet_core", "app", "assets", ".streamlit")


def run(command: list, **options) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=600, **options)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def copy_sources(target: Path) -> Path:
    """What a fresh clone holds of the package, without build leftovers or caches."""
    target.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target / name)
    return target


def fresh_venv(path: Path) -> Path:
    """A virtual environment with no packages; the tests' installed dependencies visible through a .pth file."""
    run([sys.executable, "-m", "venv", "--without-pip", path])
    purelib = Path(run([path / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                   .stdout.strip())
    (purelib / "installed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


def pip_into(venv: Path, *args) -> subprocess.CompletedProcess:
    # This interpreter's pip installs into the fresh environment (which has none of its own).
    return run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-index", *args])


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("install")
    source = copy_sources(work / "source")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", work / "wheels", source])
    wheel = next((work / "wheels").glob("drnet_explorer-*.whl"))
    venv = fresh_venv(work / "venv")
    pip_into(venv, wheel)
    return venv


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def test_wheel_installs_offline_with_every_dependency_already_present(installed):
    # pip resolved every declared dependency from what was present: it installed the package alone.
    added = sorted(path.name for path in site_packages(installed).iterdir())
    assert [name for name in added if not name.startswith("drnet")] == ["installed_dependencies.pth"]
    packaged = site_packages(installed) / "drnet_core"
    for shipped in ("assets/drnet_fashion.pt", "assets/drnet_fashion.pt.sha256", "assets/fashion_mnist_test_subset.npz",
                    "assets/baselines/plain_cnn.pt", "streamlit_config/config.toml", "net/model.py",
                    "training/phases.py", "analysis/evaluate.py", "figures/routing_graph.py", "cli/commands.py"):
        assert (packaged / shipped).is_file(), shipped
    for shipped in ("streamlit_app.py", "views/audit.py", "audit_rows.py", "caches.py"):
        assert (site_packages(installed) / "drnet_app" / shipped).is_file(), shipped
    assert list((packaged / "assets" / "ood").glob("*.npz")), "the shipped calibration of the unfamiliar-input warning"


def test_installed_drnet_evaluates_from_outside_the_checkout_like_the_checkout(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    from_package = run([installed / "bin" / "drnet", "evaluate", "--limit", "200", "--json"], cwd=elsewhere,
                       env=environment)
    from_checkout = run([sys.executable, "-m", "drnet_core", "evaluate", "--limit", "200", "--json"], cwd=ROOT)
    assert json.loads(from_package.stdout) == json.loads(from_checkout.stdout)
    where = run([installed / "bin" / "python", "-c", "import drnet_core.resources as r; print(r.ASSETS)"],
                cwd=elsewhere, env=environment)
    assert Path(where.stdout.strip()) == site_packages(installed) / "drnet_core" / "assets"


def test_installed_drnet_app_serves_and_its_script_runs(installed, tmp_path):
    port = free_port()
    server = subprocess.Popen([installed / "bin" / "drnet", "app", "--port", str(port), "--address", "127.0.0.1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, health = time.monotonic() + 120, None
        while time.monotonic() < deadline and health != "ok":
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as answer:
                    health = answer.read().decode()
            except OSError:
                time.sleep(0.5)
        assert health == "ok"
    finally:
        server.terminate()
        server.wait(timeout=30)
    # The installed app's script itself (Streamlit's script runner; the browser tests cover the checkout's).
    check = ("from streamlit.testing.v1 import AppTest\n"
             "import drnet_core.resources as r\n"
             "at = AppTest.from_file(str(r.app_folder() / 'streamlit_app.py'), default_timeout=240).run()\n"
             "assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]\n"
             "print(at.title[0].value)\n")
    result = run([installed / "bin" / "python", "-c", check], cwd=tmp_path,
                 env={**os.environ, "DRNET_EVAL_LIMIT": "120"})
    assert result.stdout.strip() == "Start here"


def test_editable_install_serves_the_checkouts_assets(tmp_path):
    source = copy_sources(tmp_path / "source")
    venv = fresh_venv(tmp_path / "venv")
    pip_into(venv, "--no-build-isolation", "--editable", source)
    result = run([venv / "bin" / "python", "-c", "import drnet_core.resources as r; print(r.ASSETS); print(r.app_folder())"],
                 cwd=tmp_path)
    assert result.stdout.split() == [str(source / "assets"), str(source / "app")]
    summary = json.loads(run([venv / "bin" / "drnet", "evaluate", "--limit", "20", "--json"], cwd=tmp_path).stdout)
    assert summary["n"] == 20
