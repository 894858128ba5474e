"""The arm64 image for real: on an x86-64 host under qemu (set up where missing, as root), natively
on an arm64 one. Opt-in (COLDCHAIN_ARM64_TESTS=1, and `-m arm64`): its cold build is minutes of
emulation that the default CI run cannot afford; the arm64 CI step runs it (README, "An edge device:
arm64"). No model needed: the image's own interpreter, numerics and op-library check."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from coldchain.config import BASES
from coldchain.contract import Code
from coldchain.engine import Mount, RunSpec
from coldchain.environments.images import BuildOptions, ensure_image
from coldchain.environments.matrix import environment_image_spec

pytestmark = [pytest.mark.docker, pytest.mark.arm64,
              pytest.mark.skipif(os.environ.get("COLDCHAIN_ARM64_TESTS") != "1",
                                 reason="arm64 under emulation is opt-in: COLDCHAIN_ARM64_TESTS=1")]
X86_LIBRARY = next((path for path in ("/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1")
                    if Path(path).exists()), None)


@pytest.fixture(scope="session")
def arm64_image(docker_engine, project, run_id, session_tags):
    spec = environment_image_spec(project, Path("drift/matrix.toml"), "arm64", "--env")
    return ensure_image(docker_engine, project, spec, BuildOptions(prefix=run_id))


def python_in(engine, image, code: str, mounts=()) -> tuple[int, str, str]:
    result = engine.run(RunSpec(image=image.info.id, command=("python", "-c", code), mounts=tuple(mounts),
                                platform=BASES["bookworm-arm64"].platform, timeout_s=600))
    return result.exit_code, result.stdout, result.stderr


def test_the_image_is_aarch64_and_says_so(docker_engine, arm64_image):
    assert arm64_image.info.labels["io.coldchain.platform"] == "linux/arm64"
    code, out, err = python_in(docker_engine, arm64_image, "import json\nfrom incontainer.runtime import "
                               "effective_numerics\nprint(json.dumps(effective_numerics()))")
    assert code == 0, err
    numerics = json.loads(out.strip().splitlines()[-1])
    # TF decides oneDNN on aarch64 by its build; the x86 ISA list (the emulating host's) is not reported.
    assert numerics["machine"] == "aarch64" and numerics["isa"] == []
    assert numerics["onednn"]["decided_by"] == "aarch64 build"


@pytest.mark.skipif(X86_LIBRARY is None, reason="no x86-64 shared library on this host to try")
def test_an_x86_64_library_is_the_named_architecture_finding_not_a_crash(docker_engine, arm64_image, tmp_path):
    library = tmp_path / "libx86_ops.so"
    shutil.copyfile(X86_LIBRARY, library)
    tmp_path.chmod(0o755)  # the image's unprivileged user reads it
    library.chmod(0o644)
    code, out, err = python_in(docker_engine, arm64_image,
                               "from incontainer.graph.oplibs import OpLibraryError, load_op_library\n"
                               "try:\n    load_op_library('/ops/libx86_ops.so')\n"
                               "except OpLibraryError as error:\n    print(error.code, '|', error)\n",
                               mounts=(Mount(tmp_path, "/ops"),))
    assert code == 0, err
    assert out.startswith(Code.OP_LIBRARY_ARCH + " |") and "compiled for x86_64" in out
