"""Serve the app as several Streamlit processes behind nginx, each browser kept on one replica.

    python scripts/serve_replicas.py --replicas 2 --port 8501     # or: make replicas N=2 PORT=8501

Starts N `streamlit run` replicas on loopback ports (--first-replica-port, then the next ones), renders
deploy/nginx.conf.template into a run folder and starts nginx on --address:--port in front of them.
The replicas share the upload store (DRNET_UPLOAD_DIR) and the result cache (DRNET_RESULT_CACHE_DIR),
and one cookie secret (so a browser's XSRF cookie is valid on every replica). It runs until Ctrl-C or
SIGTERM, then stops everything it started. docs/DEPLOY.md has the why of each part.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drnet_core import result_cache, upload_store  # noqa: E402
from drnet_core.commands import streamlit_command  # noqa: E402

TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UPLOAD_DIR_DEFAULT = Path(tempfile.gettempdir()) / "drnet-explorer-checkpoints"  # the sidebar's default


def render_config(run_dir: Path, listen: str, replica_ports: list[int]) -> Path:
    """deploy/nginx.conf.template filled in for these replicas, written to run_dir/nginx.conf."""
    servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=0;" for port in replica_ports)
    text = (TEMPLATE.read_text().replace("{{RUN_DIR}}", str(run_dir)).replace("{{LISTEN}}", listen)
            .replace("{{SERVERS}}", servers))
    path = run_dir / "nginx.conf"
    path.write_text(text)
    return path


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=timeout) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


def wait_healthy(url: str, processes: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(url):
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with code {process.returncode} before {url} was up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become healthy in {timeout:g} s")
        time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def shared_environment(env: dict[str, str] | None) -> dict[str, str]:
    """The environment every replica gets: one upload store, one result cache, one cookie secret."""
    merged = {**os.environ, **(env or {})}
    merged.setdefault(upload_store.DIR_ENV, str(UPLOAD_DIR_DEFAULT))
    merged.setdefault(result_cache.DIR_ENV, str(result_cache.DEFAULT_DIR))
    merged.setdefault("STREAMLIT_SERVER_COOKIE_SECRET", secrets.token_hex(32))
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), merged.get("PYTHONPATH")]))
    return merged


@contextlib.contextmanager
def replicas(count: int, port: int, *, address: str = "127.0.0.1", first_replica_port: int | None = None,
             env: dict[str, str] | None = None, log_dir: Path | None = None, timeout: float = 300):
    """Start `count` replicas and nginx; yield {"url", "replica_urls", "run_dir", "processes"}; stop all on exit."""
    if count < 1:
        raise ValueError(f"at least one replica, got {count}")
    if not Path(NGINX).exists():
        raise FileNotFoundError("nginx is not installed (apt-get install nginx-light)")
    first_replica_port = first_replica_port or port + 100
    ports = [first_replica_port + index for index in range(count)]
    run_dir = Path(tempfile.mkdtemp(prefix="drnet-replicas-"))
    # Started as root, nginx's workers run as an unprivileged user: they must reach the temporary folders
    # (an upload's body is buffered there) that the master creates for them inside run_dir.
    run_dir.chmod(0o755)
    log_dir = log_dir or run_dir
    environment = shared_environment(env)
    processes: list[subprocess.Popen] = []
    logs = []
    try:
        for index, replica_port in enumerate(ports):
            log = open(log_dir / f"replica-{index + 1}.log", "wb")
            logs.append(log)
            command = streamlit_command(replica_port, "127.0.0.1", ["--server.fileWatcherType", "none"])
            processes.append(subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT))
        listen = f"{address}:{port}"
        config = render_config(run_dir, listen, ports)
        nginx_log = open(log_dir / "nginx.log", "wb")
        logs.append(nginx_log)
        processes.append(subprocess.Popen([NGINX, "-c", str(config), "-p", str(run_dir)], stdout=nginx_log,
                                          stderr=subprocess.STDOUT))
        replica_urls = [f"http://127.0.0.1:{replica_port}" for replica_port in ports]
        for url in replica_urls:
            wait_healthy(url, processes, timeout)
        url = f"http://{'127.0.0.1' if address in ('0.0.0.0', '') else address}:{port}"
        wait_healthy(url, processes, 30)
        yield {"url": url, "replica_urls": replica_urls, "run_dir": run_dir, "processes": processes}
    finally:
        for process in reversed(processes):
            stop(process)
        for log in logs:
            log.close()
        if log_dir != run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="Streamlit processes (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8501, help="nginx's port (default: %(default)s)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="nginx's address; 0.0.0.0 serves the network (default: %(default)s)")
    parser.add_argument("--first-replica-port", type=int, default=None,
                        help="the first replica's loopback port, the others follow (default: --port + 100)")
    args = parser.parse_args(argv)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with replicas(args.replicas, args.port, address=args.address, first_replica_port=args.first_replica_port,
                  log_dir=None) as served:
        print(f"{args.replicas} replicas behind nginx on {served['url']} "
              f"({', '.join(served['replica_urls'])}); logs and config in {served['run_dir']}. Ctrl-C stops.",
              flush=True)
        try:
            while not stopping:
                if any(process.poll() is not None for process in served["processes"]):
                    print("a replica or nginx stopped; stopping the rest", file=sys.stderr)
                    return 1
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
