"""Every CLI option, defined once and shared by the commands that take it (as pip-tools does)."""

from __future__ import annotations

from pathlib import Path

import click

from .config import BASES, IMAGES, LOCKS

verbose = click.option("-v", "--verbose", count=True, help="More log output (repeat for build logs).")
quiet = click.option("-q", "--quiet", count=True, help="Less log output.")
project = click.option("--project", type=click.Path(file_okay=False, path_type=Path), default=None,
                       help="The coldchain checkout (default: found from the current directory).")
json_output = click.option("--json", "as_json", is_flag=True, help="Write the result as JSON on stdout.")
prefix = click.option("--prefix", default="coldchain", show_default=True, envvar="COLDCHAIN_PREFIX",
                      help="Image name prefix; tests use a unique one per run.")
base_image = click.option("--base-image", default=None, envvar="COLDCHAIN_BASE_IMAGE",
                          help="Use this base image instead of choosing one.")
no_pull = click.option("--no-pull", is_flag=True, envvar="COLDCHAIN_NO_PULL",
                       help="Never try a registry; build the local Debian base instead.")
force = click.option("--force", is_flag=True, help="Rebuild even when an image of the same inputs exists.")
keep_build_stages = click.option("--keep-build-stages", is_flag=True, envvar="COLDCHAIN_KEEP_BUILD_STAGES",
                                 help="Keep each image's install stage (its wheels and a second copy of the venv): "
                                      "rebuilds after editing scripts/ skip pip, at 2.2 GB (CPU) or 7.6 GB (CUDA) "
                                      "of disk per image.")
device = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
role = click.option("--role", type=click.Choice(["train", "infer", "all"]), default="all", show_default=True)
lock_names = click.option("--only", "only", multiple=True, type=click.Choice(sorted(LOCKS)),
                          help="Restrict to these locks (repeatable).")
upgrade = click.option("--upgrade", is_flag=True, help="Re-resolve every pin to the newest allowed version.")
suite = click.option("--suite", type=click.Choice(sorted(BASES)), default="bookworm", show_default=True)
image_names = click.option("--image", "images", multiple=True, type=click.Choice(sorted(IMAGES)),
                           help="Which images (repeatable).")

out_dir = click.option("--out", "out", type=click.Path(path_type=Path), required=True,
                       help="Where the step writes its result (replaced only when the step succeeds).")
data_dir = click.option("--data", type=click.Path(path_type=Path), required=True,
                        help="Dataset: one subfolder per class (JPEG/PNG), or slim TFRecords.")
run_dir = click.option("--run", "run", type=click.Path(path_type=Path), required=True,
                       help="A training run directory (checkpoints, config.json).")
model_dir = click.option("--model", type=click.Path(path_type=Path), required=True,
                         help="A frozen model directory (model.pb, manifest.json, golden.npz).")
memory = click.option("--memory", default="8g", show_default=True, help="Container memory limit.")
checkpoint = click.option("--checkpoint-path", type=click.Path(path_type=Path), default=None,
                          help="Fine-tune from this checkpoint (file prefix or directory).")
passthrough = click.argument("extra", nargs=-1, type=click.UNPROCESSED)

matrix = click.option("--matrix", "matrix_path", type=click.Path(dir_okay=False, path_type=Path),
                      default=Path("drift/matrix.toml"), show_default=True, help="The drift matrix.")
cases = click.option("--case", "cases", multiple=True, help="Run only these cases (repeatable).")
jobs = click.option("--jobs", type=click.IntRange(0, 64), default=0, show_default=True,
                    help="Cases run at once (0: one per two cores, at least one).")
