"""Serve the app as several Streamlit processes behind nginx, each browser kept on one replica.

    python -m deploy.replicas --replicas 2 --port 8501     # or: make replicas N=2 PORT=8501

Starts N `streamlit run` replicas on loopback ports (--first-replica-port, then the next ones), renders
deploy/nginx.conf.template into a run folder and starts nginx on --address:--port in front of them.
The replicas share the upload store (DRNET_UPLOAD_DIR) and the result cache (DRNET_RESULT_CACHE_DIR),
and one cookie secret (so a browser's XSRF cookie is valid on every replica). With at most as many
replicas as cores, each replica gets its own share of the cores (CPU affinity), so that N processes that
each size their thread pools to the machine do not oversubscribe it. --upstream HOST:PORT adds replicas
started elsewhere (`drnet app --address 0.0.0.0` on other machines, with the same DRNET_UPLOAD_DIR,
DRNET_RESULT_CACHE_DIR and STREAMLIT_SERVER_COOKIE_SECRET); --replicas 0 runs the proxy alone.
It runs until Ctrl-C or SIGTERM, then stops everything it started. docs/DEPLOY.md has the why of each part.
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

from drnet_app import result_cache, upload_store
from drnet_core.cli.commands import streamlit_command

TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UPLOAD_DIR_DEFAULT = Path(tempfile.gettempdir()) / "drnet-explorer-checkpoints"  # the sidebar's default


def render_config(run_dir: Path, listen: str, replicas: list[str]) -> Path:
    """deploy/nginx.conf.template filled in for these replicas (host:port), written to run_dir/nginx.conf."""
    servers = "\n".join(f"        server {replica} max_fails=0;" for replica in replicas)
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
    return merged


def core_shares(count: int) -> list[set[int] | None]:
    """Each replica's cores: an equal share when there are at least as many cores as replicas, else None
    (every replica may use every core)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores or count > len(cores):
        return [None] * count
    share = len(cores) // count
    return [set(cores[index * share:(index + 1) * share]) for index in range(count)]


def start_replica(port: int, cores: set[int] | None, environment: dict[str, str], log) -> subprocess.Popen:
    command = streamlit_command(port, "127.0.0.1", ["--server.fileWatcherType", "none"])
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    if cores:
        # Set while the new process is still starting Python: the threads it makes later inherit it.
        os.sched_setaffinity(process.pid, cores)
    return process


@contextlib.contextmanager
def replicas(count: int, port: int, *, address: str = "127.0.0.1", first_replica_port: int | None = None,
             upstream: tuple[str, ...] = (), env: dict[str, str] | None = None, log_dir: Path | None = None,
             timeout: float = 300):
    """Start `count` replicas and nginx in front of them and of `upstream`; yield {"url", "replica_urls",
    "run_dir", "processes"}; stop all on exit."""
    if count < 0 or count + len(upstream) < 1:
        raise ValueError(f"at least one replica, got {count} here and {len(upstream)} elsewhere")
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
        for index, (replica_port, cores) in enumerate(zip(ports, core_shares(count))):
            logs.append(open(log_dir / f"replica-{index + 1}.log", "wb"))
            processes.append(start_replica(replica_port, cores, environment, logs[-1]))
        listen = f"{address}:{port}"
        here = [f"127.0.0.1:{replica_port}" for replica_port in ports]
        config = render_config(run_dir, listen, here + list(upstream))
        nginx_log = open(log_dir / "nginx.log", "wb")
        logs.append(nginx_log)
        processes.append(subprocess.Popen([NGINX, "-c", str(config), "-p", str(run_dir)], stdout=nginx_log,
                                          stderr=subprocess.STDOUT))
        replica_urls = [f"http://127.0.0.1:{replica_port}" for replica_port in ports] + [
            f"http://{replica}" for replica in upstream]
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
    parser.add_argument("--replicas", type=int, default=2, help="Streamlit processes here (default: %(default)s)")
    parser.add_argument("--upstream", action="append", default=[], metavar="HOST:PORT",
                        help="a replica started elsewhere (repeatable)")
    parser.add_argument("--port", type=int, default=8501, help="nginx's port (default: %(default)s)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="nginx's address; 0.0.0.0 serves the network (default: %(default)s)")
    parser.add_argument("--first-replica-port", type=int, default=None,
                        help="the first replica's loopback port, the others follow (default: --port + 100)")
    args = parser.parse_args(argv)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with replicas(args.replicas, args.port, address=args.address, first_replica_port=args.first_replica_port,
                  upstream=tuple(args.upstream)) as served:
        print(f"{len(served['replica_urls'])} replicas behind nginx on {served['url']} "
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
