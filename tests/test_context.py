from __future__ import annotations

import os
import tarfile
import time

from coldchain.environments.context import BuildContext


def make_context(tmp_path):
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "b.py").write_text("b")
    (tmp_path / "src" / "a.py").write_text("a")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    context = BuildContext()
    context.add_tree("scripts", tmp_path / "src")
    context.add_file("Dockerfile", tmp_path / "Dockerfile")
    context.add_bytes("generated.txt", b"x")
    return context


def test_same_inputs_give_identical_tar_bytes(tmp_path):
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    make_context(tmp_path).write(first)
    time.sleep(0.01)
    os.utime(tmp_path / "src" / "a.py", (1, 1))  # a touched file must not change the context
    make_context(tmp_path).write(second)
    assert first.read_bytes() == second.read_bytes()


def test_entries_sorted_with_normalised_owners(tmp_path):
    target = tmp_path / "ctx.tar"
    make_context(tmp_path).write(target)
    with tarfile.open(target) as tar:
        members = tar.getmembers()
    names = [m.name for m in members if m.isfile()]
    assert names == sorted(names)
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}


def test_fingerprint_follows_content(tmp_path):
    context = make_context(tmp_path)
    before = context.fingerprint()
    (tmp_path / "src" / "a.py").write_text("changed")
    assert context.fingerprint() != before
