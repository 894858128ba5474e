"""Every CLI option, defined once and shared by the commands that take it (as pip-tools does); the
environment variable of each is shown in --help."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from .config import BASES, IMAGES, LOCKS
from .contract import (DEFAULT_BF16_TOLERANCE, FLAG_ALLOW_OP, FLAG_ALLOW_SOFT_PLACEMENT, FLAG_BF16_TOLERANCE,
                       FLAG_CHECKPOINT_PATH, FLAG_CLEAR_DEVICES, FLAG_DATA, FLAG_IMAGES, FLAG_IMAGE_SIZE, FLAG_INPUT,
                       FLAG_JSON, FLAG_LABELS, FLAG_LABELS_OFFSET, FLAG_LOAD_OP_LIBRARIES, FLAG_LOGITS, FLAG_MANIFEST,
                       FLAG_MODEL, FLAG_NO_RUN, FLAG_OP_LIBRARY, FLAG_OUT, FLAG_OUTPUT, FLAG_PRECISION,
                       FLAG_PREPROCESSING, FLAG_PREPROCESSING_FIELD, FLAG_REPEATS, FLAG_RUN, FLAG_RUNTIME,
                       FLAG_STRIP_DEFAULT_ATTRS, FLAG_THREADS, PRECISION_FP32, RUNTIME_FASTEST, RUNTIME_TENSORFLOW,
                       Code)
from .engine.engine import CALL_TIMEOUT_S
from .contract import (CALIBRATION_TARGETS, CONVERSION_TARGETS, FLAG_CALIBRATION_IMAGES, FLAG_GOLDEN_BOUND,
                       FLAG_NO_XNNPACK, INFER_PRECISIONS, INFER_RUNTIMES, QUANTIZED_PRECISIONS, RUNTIME_TFLITE)

option = partial(click.option, show_envvar=True)
PathType = partial(click.Path, path_type=Path)

verbose = click.option("-v", "--verbose", count=True, help="More log output (repeat for build logs).")
quiet = click.option("-q", "--quiet", count=True, help="Less log output.")
project = option("--project", type=PathType(file_okay=False), default=None, envvar="COLDCHAIN_PROJECT",
                 help="The coldchain checkout (default: found from the current directory).")
docker_timeout = option("--docker-timeout", "docker_timeout_s", type=click.FloatRange(1, None), default=CALL_TIMEOUT_S,
                        show_default=True, envvar="COLDCHAIN_DOCKER_TIMEOUT",
                        help="Seconds one Docker API call may go unanswered before the daemon counts as stalled "
                             "(exit 12). Builds, transfers and a container's run have their own limits.")
json_output = click.option(FLAG_JSON, "as_json", is_flag=True, help="Write the result as JSON on stdout.")
prefix = option("--prefix", default="coldchain", show_default=True, envvar="COLDCHAIN_PREFIX",
                help="Image name prefix; tests use a unique one per run.")
base_image = option("--base-image", default=None, envvar="COLDCHAIN_BASE_IMAGE",
                    help="Use this base image instead of choosing one.")
no_pull = option("--no-pull", is_flag=True, envvar="COLDCHAIN_NO_PULL",
                 help="Never try a registry; build the local Debian base instead.")
force = click.option("--force", is_flag=True, help="Rebuild even when an image of the same inputs exists, without "
                                                   "Docker's layer cache (a corrupted layer would survive it).")
verify_images = option("--verify", is_flag=True, envvar="COLDCHAIN_VERIFY_IMAGES",
                       help="Run each image and re-hash its files against the record made when it was built; "
                            "exit 20 on any difference.")
image_ref = click.argument("image", metavar="IMAGE")
sbom_lock = option("--lock", "lock", type=PathType(dir_okay=False, exists=True), default=None,
                   envvar="COLDCHAIN_SBOM_LOCK",
                   help="First check the image's SBOM against this hashed lock (every pin, version and wheel "
                        "hash); exit 20 on any difference.")
keep_build_stages = option("--keep-build-stages", is_flag=True, envvar="COLDCHAIN_KEEP_BUILD_STAGES",
                           help="Keep each image's install stage (its wheels and a second copy of the venv): "
                                "rebuilds after editing scripts/ skip pip, at 2.2 GB (CPU) or 7.6 GB (CUDA) "
                                "of disk per image.")
device = option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                envvar="COLDCHAIN_DEVICE", help="Which images: CPU, or CUDA (the GPU is used where Docker has one).")
devices = click.option("--device", "devices", multiple=True, type=click.Choice(["cpu", "cuda"]), default=["cpu"],
                       show_default=True, help="Which images to measure (repeatable).")
lock_names = click.option("--only", "only", multiple=True, type=click.Choice(sorted(LOCKS)),
                          help="Restrict to these locks (repeatable).")
upgrade = click.option("--upgrade", is_flag=True, help="Re-resolve every pin to the newest allowed version.")
suite = click.option("--suite", type=click.Choice(sorted(BASES)), default="bookworm", show_default=True)
image_names = click.option("--image", "images", multiple=True, type=click.Choice(sorted(IMAGES)),
                           help="Which images (repeatable).")
memory = option("--memory", default="8g", show_default=True, envvar="COLDCHAIN_MEMORY", help="Container memory limit.")
timeout = option("--timeout", "timeout_s", type=click.FloatRange(1, None), default=None, envvar="COLDCHAIN_TIMEOUT",
                 help="Kill a step's container after this many seconds (default: 4 h for train, 30 min otherwise).")

out_dir = click.option(FLAG_OUT, "out", type=PathType(), required=True,
                       help="Where the step writes its result (replaced only when the step succeeds).")
data_dir = click.option(FLAG_DATA, type=PathType(), required=True,
                        help="Dataset: one subfolder per class (JPEG/PNG), or slim TFRecords.")
run_dir = click.option(FLAG_RUN, "run", type=PathType(), required=True,
                       help="A training run directory (checkpoints, config.json).")
model_dir = click.option(FLAG_MODEL, type=PathType(), required=True,
                         help="A model directory (model.pb, manifest.json, golden.npz), or the model.pb in it.")
model_argument = click.argument("model", type=PathType())
checkpoint = click.option(FLAG_CHECKPOINT_PATH, type=PathType(), default=None,
                          help="Fine-tune from this checkpoint (file prefix or directory).")
passthrough = click.argument("extra", nargs=-1, type=click.UNPROCESSED)
images_and_passthrough = click.argument("extra", nargs=-1, type=click.UNPROCESSED, metavar="[IMAGE]...")
output_file = click.option(FLAG_OUTPUT, type=PathType(), default=None,
                           help="Predictions file (.jsonl or .csv), and the summary as JSON on stdout. Without it, "
                                "each image's top 5 is printed as label_image prints it (--format jsonl or csv: the "
                                "predictions in that format instead).")
inputs = click.option(FLAG_INPUT, "inputs", multiple=True, type=PathType(),
                      help="An image file or a directory of images (repeatable); or name them as arguments.")
manifest = click.option(FLAG_MANIFEST, type=PathType(dir_okay=False), default=None,
                        help="manifest.json (default: the one beside the model).")
load_op_libraries = click.option(FLAG_LOAD_OP_LIBRARIES, is_flag=True,
                                 help="Load the model's shipped custom-op libraries (runs their code).")
allow_soft_placement = click.option(FLAG_ALLOW_SOFT_PLACEMENT, is_flag=True,
                                    help="Treat pins to absent devices as warnings (TF places those nodes on the CPU).")


def _op_names(context, parameter, values) -> tuple[str, ...]:
    """--allow-op may be repeated, and its environment variable lists names separated by commas."""
    return tuple(dict.fromkeys(name.strip() for value in values for name in value.split(",") if name.strip()))


allow_op = option(FLAG_ALLOW_OP, "allowed_ops", multiple=True, envvar="COLDCHAIN_ALLOW_OP", metavar="OP",
                  callback=_op_names,
                  help=f"Let this op through the graph scan for ops an inference graph never needs "
                       f"({Code.DANGEROUS_OP}: ReadFile, WriteFile, SaveV2, PyFunc, ...), where you trust the model "
                       "(repeatable; the environment variable takes names separated by commas). Recorded in the "
                       "report.")


runtime = option(FLAG_RUNTIME, type=click.Choice(INFER_RUNTIMES + (RUNTIME_FASTEST,)), default=RUNTIME_TENSORFLOW,
                 show_default=True, envvar="COLDCHAIN_RUNTIME",
                 help="Run the model in TensorFlow, or converted for ONNX Runtime (tf2onnx), OpenVINO or TensorFlow Lite "
                      "(LiteRT; converted/tflite-<precision>/); the conversion is cached in MODEL/converted/ and "
                      f"golden-checked before any prediction. {RUNTIME_FASTEST}: each runtime golden-checked at "
                      "--precision and timed at batch 8, the fastest used (the summary says which and why); with a "
                      "quantized --precision (int8, fp16, dynamic), the artefacts that compute it (int8: TFLite's, "
                      "OpenVINO's and ONNX Runtime's): int8 only when declared.")
converted_runtime = option(FLAG_RUNTIME, "--target", "runtime", type=click.Choice(CONVERSION_TARGETS), required=True,
                           multiple=True, help="What to convert the model for: a runtime, a TFLite precision "
                                               "(tflite-int8: full integer, calibrated on --calibration-images), or "
                                               "int8 for OpenVINO (NNCF) or ONNX Runtime (static QDQ), calibrated "
                                               "on the same images; repeatable: several are made in one container.")
calibration_images = option(FLAG_CALIBRATION_IMAGES, "calibration", type=PathType(file_okay=False, exists=True),
                            default=None, envvar="COLDCHAIN_CALIBRATION_IMAGES",
                            help=f"Representative images for {', '.join(CALIBRATION_TARGETS)}, preprocessed as the "
                                 "manifest says (default for the kit's model: data/train beside the model folder).")
precision = option(FLAG_PRECISION, type=click.Choice(INFER_PRECISIONS), default=PRECISION_FP32, show_default=True,
                   envvar="COLDCHAIN_PRECISION",
                   help="The precision the runtime must compute in, set explicitly (OpenVINO's "
                        f"INFERENCE_PRECISION_HINT too); bf16 is judged with --bf16-tolerance; "
                        f"{'/'.join(QUANTIZED_PRECISIONS)} are {RUNTIME_TFLITE} conversions, judged by top-1 agreement "
                        f"and a probability-error bound ({FLAG_GOLDEN_BOUND}).")
no_xnnpack = option(FLAG_NO_XNNPACK, "no_xnnpack", is_flag=True, envvar="COLDCHAIN_NO_XNNPACK",
                    help=f"--runtime {RUNTIME_TFLITE}: LiteRT's builtin kernels, without the XNNPACK delegate.")
golden_bound = option(FLAG_GOLDEN_BOUND, type=click.FloatRange(0, 1, min_open=True), default=None,
                      envvar="COLDCHAIN_GOLDEN_BOUND",
                      help="Quantized precisions: the largest probability error on the golden images the check "
                           "accepts (default: the model's bound, measured when it was converted).")
bf16_tolerance = option(FLAG_BF16_TOLERANCE, type=click.FloatRange(0, 1, min_open=True, max_open=True),
                        default=DEFAULT_BF16_TOLERANCE, show_default=True, envvar="COLDCHAIN_BF16_TOLERANCE",
                        help="With --precision bf16: how far each golden tensor may be off, as a fraction of its "
                             "largest magnitude (top-1 must still agree).")

matrix = option("--matrix", "matrix_path", type=PathType(dir_okay=False), default=Path("drift/matrix.toml"),
                show_default=True, envvar="COLDCHAIN_MATRIX", help="The drift matrix.")
cases = click.option("--case", "cases", multiple=True, help="Run only these cases (repeatable).")
jobs = option("--jobs", type=click.IntRange(0, 64), default=0, show_default=True, envvar="COLDCHAIN_JOBS",
              help="Cases run at once (0: one per two cores, at least one).")
drift_model = click.option(FLAG_MODEL, type=PathType(), default=Path("out/model"), show_default=True,
                           help="The model every environment must load: make freeze's, or one made by adopt (its "
                                "directory, or the model.pb in it).")
drift_run = click.option(FLAG_RUN, "run", type=PathType(), default=None,
                         help="The training run the re-frozen variants are made from (default: out/run when --model "
                              "is out/model; none for an adopted model, whose re-frozen variants are then not "
                              "applicable).")
drift_out = click.option(FLAG_OUT, "out", type=PathType(), default=Path("out/drift"), show_default=True,
                         help="Report directory (JSON, Markdown, JUnit XML, heatmap PNG; variants in models/).")
shard = option("--shard", default=None, envvar="COLDCHAIN_SHARD", metavar="I/N",
               help="Run only shard I of N (1-based), as drift-plan splits the matrix. Without it, a CI job "
                    "matrix's own variables choose: CI_NODE_INDEX/CI_NODE_TOTAL (GitLab parallel, 1-based), or "
                    "JOB_COMPLETION_INDEX (Kubernetes Indexed Job, 0-based) with COLDCHAIN_SHARDS=N. The "
                    "partial report's names carry the index; drift-merge joins them.")
shards = option("--shards", type=click.IntRange(1, 256), default=1, show_default=True, envvar="COLDCHAIN_SHARDS",
                help="How many shards to split the matrix into.")
costs = option("--costs", type=PathType(dir_okay=False), default=None, envvar="COLDCHAIN_COSTS",
               help="Balance shards by the measured case times of this earlier drift-report.json (every shard "
                    "and drift-plan must be given the same file); default: estimates.")
isolate = click.option("--isolate", is_flag=True,
                       help="One container per case. By default cases of one environment with the same environment "
                            "variables share a container (one TensorFlow import); a case loading an op library "
                            "always runs alone.")
partials = click.argument("partials", nargs=-1, required=True, type=PathType())
merge_out = click.option(FLAG_OUT, "out", type=PathType(), default=Path("out/drift"), show_default=True,
                         help="Where the merged report goes (the names an unsharded run writes).")
no_heatmap = click.option("--no-heatmap", is_flag=True,
                          help="Skip the heatmap PNG (drawn in the inference image, which is built if missing).")
env_name = click.option("--env", "env_name", default=None, help="A drift-matrix environment's runtime.")
image_tag = click.option("--image", "image_tag", default=None, help="The runtime in this image (any local tag).")

adopt_out = click.option(FLAG_OUT, "out", type=PathType(), default=Path("out/adopted"), show_default=True,
                         help="The model directory to write (model, manifest.json, golden.npz).")
labels_file = click.option(FLAG_LABELS, type=PathType(dir_okay=False), default=None,
                           help="The model's labels: one class name per line, or slim's id:name lines.")
labels_offset = click.option(FLAG_LABELS_OFFSET, type=click.IntRange(0, 1), default=None,
                             help="1 when class 0 is slim's background (default: 1 for slim's 1001 classes with "
                                  "a 1000-name labels file).")
own_images = click.option(FLAG_IMAGES, type=PathType(file_okay=False), default=None,
                          help="A few of your own images, added to the golden probe.")
preprocessing = click.option(FLAG_PREPROCESSING, default="vgg", show_default=True,
                             help="Preprocessing preset as slim names it: vgg (resnet_v1's), inception, coldchain.")
preprocessing_fields = click.option(FLAG_PREPROCESSING_FIELD, "preprocessing_fields", multiple=True,
                                    metavar="FIELD=VALUE", help="Change one field of the preset (repeatable).")
graph_input = click.option(FLAG_INPUT, "graph_input", default=None,
                           help="The input placeholder (default: the graph's only one).")
graph_output = click.option(FLAG_OUTPUT, "graph_output", default=None,
                            help="The probabilities output (default: slim's resnet_v1_50/predictions/Reshape_1).")
graph_logits = click.option(FLAG_LOGITS, "graph_logits", default=None,
                            help="The logits output (default: slim's SpatialSqueeze or logits/BiasAdd).")
image_size = click.option(FLAG_IMAGE_SIZE, type=click.IntRange(16, 4096), default=None,
                          help="The image size where the placeholder leaves it open.")
op_library = click.option(FLAG_OP_LIBRARY, "op_libraries", multiple=True, type=PathType(dir_okay=False),
                          help="A custom-op library the graph needs (repeatable); it ships with the model.")
requirements = option("--requirements", type=PathType(dir_okay=False), default=None, envvar="COLDCHAIN_REQUIREMENTS",
                      help="The requirements of the environment that froze the model (pip freeze or "
                           "requirements.txt): resolved into a hashed lock and built into the reference image.")
python_version = click.option("--python", "python", default=None,
                              help="The Python of --requirements' environment (default: 3.11, bookworm).")
environment_name = click.option("--name", "environment_name", default="",
                                help="A name for the --requirements environment (default: the output's name).")
reference_image = click.option("--reference-image", default=None,
                               help="Compute the golden in this image (any local tag).")
reference_env = click.option("--reference-env", default=None,
                             help="Compute the golden in this drift-matrix environment.")

archive_out = click.option(FLAG_OUT, "archive", type=PathType(dir_okay=False), required=True,
                           help="The image archive to write (a docker save tar, written under a temporary name "
                                "and renamed when complete).")
archive_in = click.argument("archive", type=PathType(dir_okay=False))
registry = click.argument("registry")
index_out = option("--index", type=PathType(dir_okay=False), default=Path("out/images.json"), show_default=True,
                   envvar="COLDCHAIN_IMAGE_INDEX", help="Where to write the pushed images' name@digest references.")
index_in = click.argument("index", type=PathType(dir_okay=False))
def _threads(context, parameter, value):
    if value is None:
        return None
    try:
        intra, inter = (int(part) for part in value.split(","))
    except ValueError:
        intra = inter = -1
    if intra < 0 or inter < 0:
        raise click.BadParameter(f"{value!r}: expected INTRA,INTER, two counts >= 0 (0 lets TensorFlow choose), "
                                 "e.g. 8,1")
    return intra, inter


infer_threads = option(FLAG_THREADS, "threads", default=None, metavar="INTRA,INTER", callback=_threads,
                       envvar="COLDCHAIN_INFER_THREADS",
                       help="TensorFlow's intra-/inter-op threads (0: its own choice). Default: the manifest's "
                            "measured setting on a host like the one that measured it (cores, CPU class, flags), "
                            "else TensorFlow's choice; the summary's threads say which and why.")
golden_cache = option("--golden-cache/--no-golden-cache", default=True, show_default=True,
                      envvar="COLDCHAIN_GOLDEN_CACHE",
                      help="Use a golden check this model passed before in this image (same model sha256, manifest, "
                           "golden arrays, runtime, precision and effective numerics) instead of running the probe "
                           "again; --golden-only always runs it.")

no_run = click.option(FLAG_NO_RUN, "run", is_flag=True, flag_value=False, default=True,
                      help="Stop after the import stage (do not execute the graph once).")
clear_devices = click.option(FLAG_CLEAR_DEVICES, is_flag=True,
                             help="Empty every node's device field (pins to GPUs or cluster jobs).")
strip_default_attrs = click.option(FLAG_STRIP_DEFAULT_ATTRS, is_flag=True,
                                   help="Drop attributes that hold their default (older runtimes).")
with_env = click.option("--with", "with_env", default=None,
                        help="Re-export in this drift-matrix environment (default: the inference image).")

clean_all = click.option("--all", "everything", is_flag=True, help="Also remove base images and the wheelhouse.")
superseded = click.option("--superseded", is_flag=True,
                          help="Only what this checkout no longer uses: the kit's names on images built from "
                               "another Dockerfile, lock or scripts/incontainer, tags of test sessions that were "
                               "killed, then every kit image no tag names and no container uses; nothing else.")

no_cold = click.option("--no-cold", is_flag=True, help="Skip the cold (no layer cache) builds.")
no_images = click.option("--no-images", is_flag=True, help="Skip the image build measurements.")
no_inference = click.option("--no-inference", is_flag=True, help="Skip the inference speed measurements.")
no_tflite = click.option("--no-tflite", is_flag=True, help="Skip the TensorFlow Lite rows (fp32 with XNNPACK on "
                                                           "and off, int8, beside TensorFlow fp32).")
quick = click.option("--quick", is_flag=True, help="CI mode: tiny input, few repeats, no cold builds, start to first "
                                                  "prediction of the default model only; checks the "
                                                  "machinery and writes bench/results-quick.json, not the README's "
                                                  "numbers.")
repeats = click.option(FLAG_REPEATS, type=click.IntRange(1, 50), default=3, show_default=True,
                       help="Repeats of each build measurement.")
no_adopt = click.option("--no-adopt", is_flag=True,
                        help="Skip timing adopt (default environment, and your own requirements).")
page_only = click.option("--page-only", is_flag=True, help="Measure nothing: write bench/README.md from "
                                                           "bench/results.json.")
no_drift = click.option("--no-drift", is_flag=True, help="Skip timing the drift test warm (one container per case, "
                                                         "shared containers, 2 and 3 shards side by side, merge).")
no_transfer = click.option("--no-transfer", is_flag=True, help="Skip timing a shard's images across daemons (built "
                                                               "in the job, archive save/load, registry push/pull).")
no_reproducibility = click.option("--no-reproducibility", is_flag=True,
                                  help="Skip training under each simulated CPU class (oneDNN default and ISA forced).")
no_signing = click.option("--no-signing", is_flag=True, help="Skip timing sign and verify of the model directory.")
bench_run = click.option(FLAG_RUN, "run", type=PathType(), default=Path("out/run"), show_default=True,
                         help="Training run the benchmark models are frozen from (its dataset beside it, in ../data).")


def image_selection(function):
    """Which images a transfer command moves: those of one drift-test shard (or, without one, all the
    matrix needs and the merge job's), as drift-plan computes them."""
    for option_ in (json_output, prefix, costs, shard, drift_model, matrix):
        function = option_(function)
    return function


def _trusted_paths(context, parameter, value) -> tuple[Path, ...]:
    """--trust A,B (or COLDCHAIN_TRUST=A,B), repeatable: every entry, in order."""
    return tuple(Path(item) for text in value or () for item in str(text).split(",") if item.strip())


sign_key = option("--sign-key", type=PathType(dir_okay=False), default=None, envvar="COLDCHAIN_SIGN_KEY",
                  help="Sign the model directory written with this elliptic-curve private key (PEM): model.sig, "
                       "OpenSSF model-signing, over every file in it.")
sign_key_required = option("--sign-key", "sign_key", type=PathType(dir_okay=False), required=True,
                           envvar="COLDCHAIN_SIGN_KEY", help="The elliptic-curve private key (PEM) to sign with.")
trust = option("--trust", multiple=True, callback=_trusted_paths, envvar="COLDCHAIN_TRUST", metavar="KEY[,KEY...]",
               help="Refuse the model unless model.sig verifies against one of these public keys or certificates "
                    "(PEM; comma-separated or repeated), on the host and again in the container. Without it the "
                    "model is used as today and the summary says 'not verified'.")
trust_required = option("--trust", "trust", multiple=True, required=True, callback=_trusted_paths,
                        envvar="COLDCHAIN_TRUST", metavar="KEY[,KEY...]",
                        help="The public keys or certificates (PEM; comma-separated or repeated) to verify against.")
