from __future__ import annotations

import hashlib

import pytest

from coldchain.config import BASES, LockSpec
from coldchain.errors import WheelhouseError
from coldchain.environments.locks import parse_lock
from coldchain.environments.wheelhouse import Wheelhouse, platform_args, wheel_identity


def make_lock(project, wheel_bytes: bytes):
    digest = hashlib.sha256(wheel_bytes).hexdigest()
    (project.root / "demo.lock").write_text(f"six==1.17.0 \\\n    --hash=sha256:{digest}\n")
    return LockSpec("demo", "demo.in", "demo.lock", "3.11"), parse_lock(project.path("demo.lock"))


def put_wheel(project, data: bytes):
    directory = project.wheelhouse / "cp311"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "six-1.17.0-py2.py3-none-any.whl"
    path.write_bytes(data)
    return path


def test_wheel_identity_normalizes():
    assert wheel_identity("Typing_Extensions-4.16.0-py3-none-any.whl") == ("typing-extensions", "4.16.0")
    assert wheel_identity("six-1.17.0.tar.gz") is None


def test_verified_wheel_is_returned_without_download(project_copy):
    spec, lock = make_lock(project_copy, b"genuine wheel")
    path = put_wheel(project_copy, b"genuine wheel")
    wheels = Wheelhouse(project_copy, BASES["bookworm"]).ensure(spec, lock)
    assert [w.path for w in wheels] == [path]


def test_swapped_wheel_is_refused_naming_the_package(project_copy):
    spec, lock = make_lock(project_copy, b"genuine wheel")
    put_wheel(project_copy, b"tampered wheel")
    with pytest.raises(WheelhouseError, match=r"six==1.17.0: .*six-1.17.0-py2.py3-none-any.whl has sha256:") as caught:
        Wheelhouse(project_copy, BASES["bookworm"]).ensure(spec, lock)
    assert "demo.lock" in caught.value.message
    assert "make lock" in caught.value.fix


def test_pip_hash_mismatch_output_names_packages():
    output = ("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.\n"
              "    six==1.17.0 from https://example.invalid/six.whl:\n        Expected sha256 0000\n")
    error = Wheelhouse._explain(LockSpec("demo", "demo.in", "demo.lock", "3.11"), output)
    assert error.message.startswith("six: the downloaded wheel does not match the hash in demo.lock")


def test_platform_args_target_the_image_python_not_the_host():
    args = platform_args("3.9", "2_31")
    assert args[args.index("--python-version") + 1] == "3.9"
    assert "manylinux_2_31_x86_64" in args and "manylinux_2_32_x86_64" not in args
