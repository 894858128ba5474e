"""`coldchain doctor` on the host: run incontainer.doctor in the runtime being asked about (the
inference image, a drift-matrix environment, or any image), the model mounted read-only."""

from __future__ import annotations

import re
from pathlib import Path

from .config import IMAGES, KIT_LABEL, Project
from .engine import Engine, Mount, RunSpec
from .errors import ContainerError, UsageError
from .images import BuildOptions, build_images
from .pipeline import container_user


def _image_for(engine: Engine, project: Project, env_name: str | None, image_tag: str | None, matrix_path: Path,
               prefix: str) -> str:
    if env_name and image_tag:
        raise UsageError("pass either --env or --image, not both", fix="--env names a drift-matrix environment")
    if image_tag:
        if engine.inspect_image(image_tag) is None:
            raise UsageError(f"image {image_tag} does not exist locally", fix="build or pull it first, or use --env")
        return image_tag
    spec = IMAGES["infer-cpu"]
    if env_name:
        from .drift import drift_image_spec
        from .matrix import known, load_matrix

        matrix = load_matrix(matrix_path if matrix_path.is_absolute() else project.root / matrix_path)
        known(matrix.path, "environment", env_name, matrix.envs, " (--env)")
        spec = drift_image_spec(matrix.envs[env_name])
    (built,) = build_images(engine, project, [spec], BuildOptions(prefix=prefix))
    return built.tag


def run_doctor(engine: Engine, project: Project, model: Path, *, manifest: Path | None, env_name: str | None,
               image_tag: str | None, matrix_path: Path, prefix: str, load_op_libraries: bool,
               allow_soft_placement: bool, as_json: bool) -> tuple[int, str]:
    model = model.resolve()
    if not model.exists():
        raise UsageError(f"{model}: not found", fix="pass a frozen model.pb or the model directory holding it")
    directory = model if model.is_dir() else model.parent
    target = "/model" if model.is_dir() else f"/model/{model.name}"
    mounts = [Mount(directory, "/model", read_only=True)]
    command = ["python", "-m", "incontainer.doctor", target]
    if manifest is not None:
        manifest = manifest.resolve()
        if not manifest.is_file():
            raise UsageError(f"{manifest}: manifest not found", fix="pass the manifest.json written by freeze")
        mounts.append(Mount(manifest.parent, "/manifest", read_only=True))
        command += ["--manifest", f"/manifest/{manifest.name}"]
    if load_op_libraries:
        command.append("--load-shipped-op-libraries")
    if allow_soft_placement:
        command.append("--allow-soft-placement")
    if as_json:
        command.append("--json")
    image = _image_for(engine, project, env_name, image_tag, matrix_path, prefix)
    result = engine.run(RunSpec(image=image, command=tuple(command), mounts=tuple(mounts), user=container_user(),
                                labels={KIT_LABEL: "coldchain"}))
    # Name files as the user knows them, not by their mount points.
    def host_paths(text: str) -> str:
        if manifest is not None:
            text = re.sub(r"(?<![\w/])/manifest(?=/)", str(manifest.parent), text)
        return re.sub(r"(?<![\w/])/model(?![\w-])", str(directory), text)

    text = host_paths(result.stdout)
    if result.exit_code not in (0, 3):
        ours = [line for line in result.stderr.splitlines() if line.startswith("coldchain: error:")]
        message = ours[-1].removeprefix("coldchain: error: ") if ours else f"doctor failed (exit {result.exit_code})"
        raise ContainerError(host_paths(message), image=image, command=command,
                             container_exit=result.exit_code, log_tail=result.stderr[-2000:],
                             fix="check the path names a frozen model.pb or its directory")
    return result.exit_code, text.rstrip()
