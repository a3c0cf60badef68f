"""The reverse proxy's configuration (deploy/nginx.conf.template, rendered by scripts/replicas.py):
nginx accepts it, it upgrades the websocket and keeps a browser on one replica by a cookie; replicas on
one machine split its cores.

Run: .venv/bin/python -m pytest -q tests/test_deploy_config.py
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


from deploy import replicas


def test_the_rendered_configuration_lists_every_replica_and_nginx_accepts_it(tmp_path):
    config = replicas.render_config(tmp_path, "127.0.0.1:8501", ["127.0.0.1:8601", "10.0.0.2:8601"])
    text = config.read_text()
    assert "{{" not in text
    assert "server 127.0.0.1:8601 max_fails=0;" in text and "server 10.0.0.2:8601 max_fails=0;" in text
    assert "hash $drnet_route consistent;" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text
    assert "client_max_body_size 11m;" in text  # Streamlit's 10 MB uploads pass
    if not Path(replicas.NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    checked = subprocess.run([replicas.NGINX, "-t", "-c", str(config), "-p", str(tmp_path)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_replicas_on_one_machine_split_its_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    assert replicas.core_shares(2) == [{0, 1}, {2, 3}]
    assert replicas.core_shares(5) == [{0}, {1}, {2}, {3}, {4}]
    assert replicas.core_shares(6) == [None] * 6  # more replicas than cores: every replica may use any


def test_at_least_one_replica_is_needed():
    with pytest.raises(ValueError, match="at least one replica"):
        with replicas.replicas(0, 8501):
            pass
