"""A second, private dockerd for tests that stop or kill a daemon: its own socket, data root, exec root,
pid file and containerd, no bridge and no iptables rules, so the shared daemon never notices it."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import pytest

START_TIMEOUT_S = 120  # a cold dockerd and its containerd on a busy two-core machine
# Coreutils' sleep and timeout with their libraries: a container that runs for as long as asked, under the
# same `timeout` wrapper the kit's images run their steps under, without copying a kit image across.
TINY_IMAGE = "coldchain-private-tiny:1"
TINY_PROGRAMS = ("/usr/bin/sleep", "/usr/bin/timeout")


class PrivateDaemon:
    def __init__(self, data_root: Path):
        # Short: containerd's sockets under the exec root must fit a unix socket path (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="ccd-", dir="/tmp"))
        self.data_root = data_root
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        (self.root / "daemon.json").write_text("{}")  # not the host's /etc/docker/daemon.json
        self.log_path = self.root / "dockerd.log"
        self.process: subprocess.Popen | None = None
        # Its containers' cgroups apart from the shared daemon's (cgroupfs: one folder per controller).
        self.cgroup_parent = f"coldchain-private-{self.root.name}"

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [shutil.which("dockerd"), "--config-file", str(self.root / "daemon.json"), "--host", self.host,
                 "--data-root", str(self.data_root), "--exec-root", str(self.root / "exec"),
                 "--pidfile", str(self.root / "dockerd.pid"), "--bridge=none", "--iptables=false",
                 "--ip-masq=false", "--storage-driver=vfs", "--cgroup-parent", f"/{self.cgroup_parent}",
                 "--containerd-namespace", "coldchain-private", "--containerd-plugins-namespace",
                 "coldchain-private-plugins"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the private dockerd did not start:\n{self.log_tail()}")
            time.sleep(0.5)

    def client(self, timeout: float = 10) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def answers(self) -> bool:
        try:
            self.client(timeout=5).version()
            return True
        except (docker.errors.DockerException, OSError):
            return False

    def import_tiny_image(self) -> str:
        repository, tag = TINY_IMAGE.split(":")
        self.client(timeout=60).api.import_image_from_data(tiny_rootfs(), repository=repository, tag=tag)
        return TINY_IMAGE

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)  # stalled: connections are accepted into the backlog, never answered

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=60)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) if self.log_path.exists() else ""

    def close(self) -> None:
        """Whatever state the test left it in: running, stopped or killed. Its containerd and shims go too
        (their command lines name its exec root), its containers' processes (found by its cgroup parent),
        and any mount it made (network namespaces) before its directories are removed."""
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.kill()
        for pid in _pids_naming(str(self.root)) + self._container_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._remove_cgroups()
        for mountpoint in sorted(_mounts_under(self.root, self.data_root), reverse=True):
            subprocess.run(["umount", "-l", mountpoint], check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _cgroups(self) -> list[Path]:
        """Its cgroup folders, deepest first."""
        found = [path for top in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}") for path in top.rglob("*")
                 if path.is_dir()] + list(Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"))
        return sorted(found, key=lambda path: len(path.parts), reverse=True)

    def _container_pids(self) -> list[int]:
        pids = set()
        for folder in self._cgroups():
            try:
                pids.update(int(line) for line in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(pids)

    def _remove_cgroups(self) -> None:
        deadline = time.monotonic() + 30  # a killed process leaves its cgroup when the kernel has reaped it
        for folder in self._cgroups():
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tiny_rootfs() -> bytes:
    libraries = set()
    for program in TINY_PROGRAMS:
        listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
        libraries.update(word for line in listed.splitlines() for word in line.split() if word.startswith("/"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = {"tmp"} | {str(Path(name).parent).lstrip("/") for name in (*TINY_PROGRAMS, *libraries)}
        for folder in sorted(folders | {str(parent) for folder in folders for parent in Path(folder).parents
                                        if str(parent) != "."}):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        for name in (*TINY_PROGRAMS, *sorted(libraries)):
            real = os.path.realpath(name)
            info = tar.gettarinfo(real, arcname=name.lstrip("/"))
            with open(real, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def _pids_naming(text: str) -> list[int]:
    """Processes whose command line contains `text` (the exec root only this daemon's processes name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and text in _cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def _mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        if any(mountpoint == str(root) or mountpoint.startswith(f"{root}/") for root in roots):
            found.append(mountpoint)
    return found


def connected_unix_sockets(pid: int) -> int:
    """How many connected unix stream sockets the process holds: a command blocked on a stopped daemon
    holds one (the connection sits in the daemon's backlog, accepted by the kernel)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    count = 0
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 7 and fields[5] == "03" and fields[6] in inodes:  # St 03: connected
            count += 1
    return count


def usable() -> str | None:
    """Why no private daemon can run here, or None."""
    if shutil.which("dockerd") is None:
        return "no dockerd binary (a remote or rootless daemon)"
    if os.geteuid() != 0:
        return "a second dockerd needs root"
    return None
