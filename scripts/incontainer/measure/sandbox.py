"""What the sandbox of this container really is, read from inside it: capabilities, no_new_privs,
read-only mounts, network interfaces, cgroup memory and pids limits, user. Prints one JSON object;
the hardening test compares it with what the host asked for."""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional, Sequence

from ..common import run_main
from ..contract import MODULES


def status_fields() -> Dict[str, str]:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def mounts() -> Dict[str, List[str]]:
    """Mount point -> its options (per-mount and superblock), from /proc/self/mountinfo."""
    found = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            before, _, after = line.partition(" - ")
            parts, tail = before.split(), after.split()
            options = parts[5].split(",") + (tail[2].split(",") if len(tail) > 2 else [])
            found[parts[4].replace("\\040", " ")] = options
    return found


def mount_of(path: str, table: Dict[str, List[str]]) -> Optional[str]:
    path = os.path.realpath(path)
    candidates = [point for point in table if path == point or path.startswith(point.rstrip("/") + "/")]
    return max(candidates, key=len) if candidates else None


def network_interfaces() -> List[str]:
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        with open("/proc/net/dev") as handle:
            return sorted(line.split(":")[0].strip() for line in handle.readlines()[2:])


def read_first(*paths: str) -> Optional[str]:
    for path in paths:
        try:
            with open(path) as handle:
                return handle.read().strip()
        except OSError:
            continue
    return None


def report(paths: Sequence[str]) -> dict:
    status = status_fields()
    table = mounts()
    checked = {}
    for path in ["/", *paths]:
        point = mount_of(path, table)
        options = table.get(point, [])
        checked[path] = {"mount": point, "read_only": "ro" in options, "options": options}
    probe = "/.coldchain-write-probe"
    try:
        with open(probe, "w"):
            pass
        os.unlink(probe)
        root_writable = True
    except OSError:
        root_writable = False
    return {
        "uid": os.getuid(), "gid": os.getgid(),
        "cap_effective": status.get("CapEff"), "cap_permitted": status.get("CapPrm"),
        "cap_bounding": status.get("CapBnd"), "no_new_privs": status.get("NoNewPrivs"),
        "mounts": checked, "root_writable": root_writable,
        "network_interfaces": network_interfaces(),
        "memory_limit": read_first("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "pids_limit": read_first("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    }


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['sandbox']}", description=__doc__)
    parser.add_argument("paths", nargs="*", help="paths whose mounts to report (e.g. the model mount)")
    args = parser.parse_args(argv)
    # Mount points are the subject here, so they are not renamed to host paths.
    print(json.dumps(report(args.paths), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
