"""The custom-op build image for the drift test: the training image's venv (its exact TensorFlow,
hence its headers) on a base with g++, the op library compiled and smoke-tested at build time."""

from __future__ import annotations

from ..cache import image_identity
from ..config import BASES, KIT_LABEL, ImageSpec, Project
from ..engine import Engine
from .bases import resolve_base
from .context import BuildContext
from .images import BuildOptions, BuildRequest, BuiltImage, build_context, git_revision

OP_BUILD_DOCKERFILE = "Dockerfile.opbuild"
OP_SOURCES = "drift/ops"
OPBUILD_SPEC = ImageSpec("opbuild", "cpu", "train-cpu", "bookworm-devel", dockerfile_name=OP_BUILD_DOCKERFILE)


def build_opbuild_image(engine: Engine, project: Project, train: BuiltImage, options: BuildOptions) -> BuiltImage:

    base = resolve_base(engine, project, BASES[OPBUILD_SPEC.base])
    context = BuildContext()
    context.add_file(OP_BUILD_DOCKERFILE, project.path(OP_BUILD_DOCKERFILE))
    context.add_tree(OP_SOURCES, project.path(OP_SOURCES))
    tensorflow = train.info.labels.get("io.coldchain.tensorflow.version", "")
    labels = {KIT_LABEL: "coldchain", "io.coldchain.role": "opbuild", "io.coldchain.device": "cpu",
              "io.coldchain.train.image": image_identity(train.info.labels, train.info.id),
              "io.coldchain.tensorflow.version": tensorflow,
              "io.coldchain.python.version": train.info.labels.get("io.coldchain.python.version", ""),
              "org.opencontainers.image.revision": git_revision(project.root),
              "org.opencontainers.image.base.name": base.ref}
    return build_context(engine, project, BuildRequest(
        spec=OPBUILD_SPEC, tag=f"{options.prefix}-opbuild:cpu", context=context, labels=labels,
        buildargs={"TRAIN_IMAGE": train.info.id, "BASE_IMAGE": base.image_id}, base=base,
        description=f"{OP_SOURCES} compiled against TensorFlow {tensorflow}"), options)
