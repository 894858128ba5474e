"""A throwaway image registry on a loopback port (Debian's docker-registry, the CNCF distribution
registry), for measuring and testing push and pull without anything outside this machine. Docker
talks plain HTTP to registries on 127.0.0.0/8 without configuration."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import ColdchainError

BINARY = "docker-registry"
INSTALL_FIX = "install it: 'bash scripts/ensure-registry.sh' (as root on Debian: apt-get install docker-registry)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def local_registry(root: Path, wait_s: float = 30.0) -> Iterator[str]:
    """Serve a registry from `root` until the block ends; yields its "127.0.0.1:PORT"."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise ColdchainError(f"no {BINARY} on PATH to serve a local registry", fix=INSTALL_FIX)
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    log_path = root / "registry.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise ColdchainError(f"the local registry did not answer on 127.0.0.1:{port}",
                                         log_tail=log_path.read_text()[-3000:], fix=f"read {log_path}") from None
                time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
