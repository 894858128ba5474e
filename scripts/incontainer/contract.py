"""The contract between the host (coldchain/) and the containers (incontainer/), written once.

Everything both sides must agree on lives here and nowhere else: outcome and finding codes (in
priority order), exit codes, environment variables, file, node and module names, the modules' flags,
mount points, the error-line format, progress prefixes, the numerics CPU flags, the probe's JSON keys
and the kept golden check. The host loads this very file (coldchain/contract.py)
and the images carry it inside incontainer/, so it must stay dependency-free and run on every
Python the drift matrix covers (3.9+).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional

# --- files a model directory and a training run hold --------------------------------------------
MODEL_FILE = "model.pb"
MANIFEST_FILE = "manifest.json"
GOLDEN_FILE = "golden.npz"
OPS_DIR = "ops"  # custom-op libraries shipped beside the model
RUN_CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"
RUN_METRICS_FILE = "metrics.json"
MANIFEST_SCHEMA_VERSION = 1
MANIFEST_FORMAT = "coldchain.frozen_graph"

# --- node names of a model the kit froze (adopted models name theirs in the manifest) -----------
INPUT_NODE = "input"
LOGITS_NODE = "logits"
PROBABILITIES_NODE = "probabilities"
TOP_K_NODE = "top_k"


def tensor_name(node: str, index: int = 0) -> str:
    return f"{node}:{index}"


ENVIRONMENT_DIR = "environment"  # in an adopted model directory: the reference environment's lock
CONVERTED_DIR = "converted"  # beside the model: converted/<runtime>/ holds a runtime's converted artefact
SIGNATURE_FILE = "model.sig"  # model-signing's bundle over every other file of the model directory
SBOM_FILE = "sbom.cdx.json"  # in environment/: CycloneDX SBOM of the lock the model was made with
CONVERSION_FILE = "conversion.json"  # in converted/<runtime>/: source sha256, artefact sha256s, converter versions

# --- inference runtimes and the precision they compute in ------------------------------------------
RUNTIME_TENSORFLOW = "tensorflow"
RUNTIME_ONNXRUNTIME = "onnxruntime"  # the graph converted with tf2onnx
RUNTIME_OPENVINO = "openvino"  # the graph read by OpenVINO's TensorFlow frontend
RUNTIMES = (RUNTIME_TENSORFLOW, RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO)
# infer only: the fastest runtime that passes the golden check at the declared precision
RUNTIME_FASTEST = "fastest"
CONVERTED_RUNTIMES = (RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO)
PRECISION_FP32 = "fp32"
PRECISION_BF16 = "bf16"
PRECISIONS = (PRECISION_FP32, PRECISION_BF16)  # what a user declares
# TensorFlow Lite: the frozen graph converted by TensorFlow's own converter, one artefact per
# precision in converted/tflite-<precision>/, run by LiteRT's interpreter (XNNPACK on unless told).
RUNTIME_TFLITE = "tflite"
PRECISION_FP16 = "fp16"  # fp16 weights, fp32 compute
PRECISION_DYNAMIC = "dynamic"  # int8 weights, activations quantized on the fly
PRECISION_INT8 = "int8"  # full integer: weights and activations, calibrated on representative images
TFLITE_PRECISIONS = (PRECISION_FP32, PRECISION_FP16, PRECISION_DYNAMIC, PRECISION_INT8)
QUANTIZED_PRECISIONS = (PRECISION_FP16, PRECISION_DYNAMIC, PRECISION_INT8)  # judged by golden/quantized.py
INFER_RUNTIMES = RUNTIMES + (RUNTIME_TFLITE,)  # infer's --runtime (the drift probe and bench: RUNTIMES)
INFER_PRECISIONS = PRECISIONS + QUANTIZED_PRECISIONS
# The drift probe's runtimes: TFLite's artefacts are converted once per drift run, by the host's step.
PROBE_RUNTIMES = INFER_RUNTIMES


def tflite_target(precision: str) -> str:
    """The conversion target (and converted/ folder) of a TFLite precision: tflite-int8."""
    return f"{RUNTIME_TFLITE}-{precision}"


TFLITE_TARGETS = tuple(tflite_target(precision) for precision in TFLITE_PRECISIONS)


def int8_target(runtime: str) -> str:
    """OpenVINO's (NNCF) and ONNX Runtime's (static QDQ) post-training int8: openvino-int8."""
    return f"{runtime}-{PRECISION_INT8}"


INT8_TARGETS = tuple(int8_target(runtime) for runtime in CONVERTED_RUNTIMES)
CONVERSION_TARGETS = CONVERTED_RUNTIMES + TFLITE_TARGETS + INT8_TARGETS  # coldchain convert --target
CALIBRATION_TARGETS = (tflite_target(PRECISION_INT8),) + INT8_TARGETS  # these need representative images


def artefact_target(runtime: str, precision: str) -> str:
    """The converted/ folder a runtime and precision read: tflite-<precision>, <runtime>-int8, else <runtime>."""
    if runtime == RUNTIME_TFLITE:
        return tflite_target(precision)
    return int8_target(runtime) if precision == PRECISION_INT8 and runtime in CONVERTED_RUNTIMES else runtime


def quantized_runtimes(precision: str) -> tuple:
    """The runtimes with an artefact computing a quantized precision: TFLite's three, int8 also OpenVINO's
    and ONNX Runtime's."""
    return (RUNTIME_TFLITE,) + (CONVERTED_RUNTIMES if precision == PRECISION_INT8 else ())


def per_run_target(runtime: str, precision: str) -> Optional[str]:
    """The artefact a drift case or bench row runs that is converted once per run, beforehand (TFLite's,
    the int8 ones); None where the probe converts in its own process (ONNX Runtime, OpenVINO at fp32/bf16)."""
    target = artefact_target(runtime, precision)
    return target if target in TFLITE_TARGETS + INT8_TARGETS else None
# A quantized model's golden check: top-1 agreement with the golden on every golden image the
# conversion agreed on, and each probability within a bound. The bound is the model's: measured at
# conversion (its largest probability error on the golden images) times this factor, at least the
# floor; or declared with --golden-bound. The factor covers another CPU's int8 kernels rounding
# differently (VNNI vs AVX2 paths), the floor a conversion that happened to be almost exact.
QUANTIZED_BOUND_FACTOR = 3.0
QUANTIZED_BOUND_FLOOR = 1e-3
# A quantized model's own bound only says it computes as it did at conversion, however far from fp32
# that was. To be picked for speed (infer --runtime fastest, the bench's fastest int8) it must also
# keep fp32's top-1 on this share of the images: the held-out ones where measured, else the golden.
QUANTIZED_MIN_TOP1_FOR_SPEED = 0.99
CALIBRATION_MAX_IMAGES = 100  # representative images drawn (sorted, evenly spaced) for full int8

# Only drift cases: leave the runtime's own default (OpenVINO picks bf16 on CPUs with AVX512_BF16/AMX)
# and judge it at fp32 tolerances, as a user who declared nothing expects.
PRECISION_RUNTIME_DEFAULT = "runtime-default"
# A bf16 run passes when every golden tensor is within this fraction of its largest magnitude and the
# top-1 class agrees on every probe. bf16 keeps 8 mantissa bits, and the error grows over 53 layers;
# the drift report shows each tensor's margin (README, Other runtimes).
DEFAULT_BF16_TOLERANCE = 0.03
# What the fraction above encodes depends on the model (a saturated softmax hides the logits' drift),
# so freeze and adopt measure what bf16 rounding does to each golden tensor of the model
# (golden.precision_budget, golden/budget.py) and a bf16 run may deviate by this factor times that.
# The factor covers what the emulation leaves out (OpenVINO rounds the batch norm it folds into the
# weights, and each fused result) and the measurement's own spread with another CPU's fp32 kernels:
# real OpenVINO bf16 deviated 0.46-1.53x the emulated one, the measurement moved up to 25% between
# oneDNN on, off and capped at AVX2 (README, Other runtimes).
BF16_BUDGET_SAFETY_FACTOR = 4.0

# Keys of golden.npz besides the per-tensor ones (which are the manifest's golden.tensors[].key).
GOLDEN_INPUT_KEY = "input"
GOLDEN_RAW_KEY = "raw_images"
GOLDEN_RAW_PREPROCESSED_KEY = "raw_preprocessed"
GOLDEN_LOGITS_KEY = "logits"
GOLDEN_PROBABILITIES_KEY = "probabilities"

# --- mount points in every container -------------------------------------------------------------
MOUNT_MODEL = "/model"
MOUNT_MODELS = "/models"  # /models/<variant>: the drift probe's several models
MOUNT_RUN = "/run"
MOUNT_DATA = "/data"
MOUNT_OUT = "/out"
MOUNT_INPUTS = "/inputs"  # /inputs/0, /inputs/1, ...
MOUNT_CHECKPOINT = "/checkpoint"
MOUNT_MANIFEST = "/manifest"
MOUNT_REPORT = "/report"
MOUNT_LABELS = "/labels"
MOUNT_CALIBRATION = "/calibration"  # convert: representative images (full int8)
MOUNT_IMAGES = "/images"
MOUNT_ENVIRONMENT = "/environment"  # a user's resolved environment (lock and its source), copied into the model
MOUNT_CONVERSIONS = "/conversions"  # drift probe: converted graphs kept between runs (writable)
MOUNT_CONVERTED = "/converted"  # drift probe: /converted/<variant>/tflite-<precision>/, made once per drift run
MOUNT_GOLDEN_VERIFIED = "/golden-verified.json"  # infer: an earlier passing golden check of this model in this image

# Every file of an image's venv and /opt/coldchain with its sha256 (sha256sum's format, sorted), written
# last when the image is built (Dockerfile.*); `coldchain images --verify` re-hashes the files against it.
FILES_RECORD = "/opt/coldchain/files.sha256"

# --- environment variables the host sets for the container --------------------------------------
ENV_IMAGE_ID = "COLDCHAIN_IMAGE_ID"
ENV_IMAGE_LABELS = "COLDCHAIN_IMAGE_LABELS"  # JSON object
ENV_LOCK_SHA256 = "COLDCHAIN_LOCK_SHA256"
ENV_PATH_MAP = "COLDCHAIN_PATH_MAP"  # JSON object: mount point -> the host path it stands for
# JSON object {relative path: sha256} of the model directory's files the host verified against a trusted
# signature; the container re-hashes the bytes it reads from the mount and refuses any other.
ENV_SIGNED_FILES = "COLDCHAIN_SIGNED_FILES"
# Where a container reads several model directories (the drift probe's /models/<variant>), the mount of the
# one ENV_SIGNED_FILES is for; the others (variants made from it) are not checked against it. Unset: every
# model directory the container reads (infer, doctor, reexport read one).
ENV_SIGNED_MODEL_DIR = "COLDCHAIN_SIGNED_MODEL_DIR"
# In the container's refusal of a signed directory whose mounted bytes differ: the host finds it by this.
SIGNED_DIRECTORY_CHANGED = "the model directory changed after the host verified it"
ENV_ONEDNN = "TF_ENABLE_ONEDNN_OPTS"  # TensorFlow's own switch; the kit records what TF made of it

# --- in-container modules the host runs (python -m ...) -----------------------------------------
MODULES = {
    "data": "incontainer.steps.make_data",
    "train": "incontainer.steps.train",
    "freeze": "incontainer.steps.freeze",
    "infer": "incontainer.steps.infer",
    "adopt": "incontainer.steps.adopt",
    "reexport": "incontainer.steps.reexport",
    "checkpoint": "incontainer.steps.checkpoint_selftest",
    "doctor": "incontainer.diagnosis.doctor",
    "probe": "incontainer.golden.probe",
    "bench": "incontainer.measure.speed",
    "heatmap": "incontainer.measure.heatmap",
    "sandbox": "incontainer.measure.sandbox",
    "env-check": "incontainer.env_check",
    "convert": "incontainer.steps.convert",
}
# Flags of those modules that the host writes into their command lines (or reads among the words a
# user passes on to them): the host builds arguments with these and the modules' parsers declare them,
# so a renamed flag cannot leave one side behind. A host option spelled the same is that flag, passed on.
FLAG_MODEL = "--model"
FLAG_OUT = "--out"  # a step's output directory
FLAG_OUTPUT = "--output"  # a step's output file; adopt: the graph's probabilities node
FLAG_DATA = "--data"
FLAG_RUN = "--run"
FLAG_JSON = "--json"
FLAG_LOAD_OP_LIBRARIES = "--load-op-libraries"
FLAG_ALLOW_SOFT_PLACEMENT = "--allow-soft-placement"
FLAG_RUNTIME = "--runtime"
FLAG_PRECISION = "--precision"
FLAG_BF16_TOLERANCE = "--bf16-tolerance"
FLAG_GOLDEN_VERIFIED = "--golden-verified"
FLAG_CONVERSION_CACHE = "--conversion-cache"
FLAG_PREPROCESSING = "--preprocessing"
FLAG_CALIBRATION_IMAGES = "--calibration-images"  # convert: representative images for full int8
FLAG_NO_XNNPACK = "--no-xnnpack"  # infer --runtime tflite: the builtin kernels, without XNNPACK
FLAG_GOLDEN_BOUND = "--golden-bound"  # infer: a quantized model's declared probability-error bound
FLAG_CONVERTED = "--converted"  # drift probe: the folder holding this run's tflite-<precision>/ artefacts
FLAG_CALIBRATE_ON_GOLDEN = "--calibrate-on-golden"  # convert: full int8 calibrated on the golden inputs
FLAG_HELD_OUT_IMAGES = "--held-out-images"  # convert int8: top-1 agreement with TF fp32 measured on these too
FLAG_PREPROCESSING_FIELD = "--preprocessing-field"
FLAG_INTRA_OP_THREADS = "--intra-op-threads"
FLAG_INTER_OP_THREADS = "--inter-op-threads"
# infer
FLAG_FORMAT = "--format"
FLAG_TOP_K = "--top-k"
FLAG_BATCH_SIZE = "--batch-size"  # train too
FLAG_ON_BAD_IMAGE = "--on-bad-image"  # train too
FLAG_GOLDEN_ONLY = "--golden-only"
# train and freeze
FLAG_CHECKPOINT_PATH = "--checkpoint-path"
FLAG_NUMERICS = "--numerics"
FLAG_MAX_STEPS = "--max-steps"
FLAG_LOG_EVERY = "--log-every"
FLAG_IMAGE_SIZE = "--image-size"  # adopt too
FLAG_THREADS = "--threads"
# freeze: the machine that measured --threads (cores, CPU class, numerics flags, as JSON): infer applies
# the measured setting only on a host that matches it (coldchain/steps/threads.py)
FLAG_THREADS_MEASURED_ON = "--threads-measured-on"
FLAG_INPUT_SIZE = "--input-size"
FLAG_FOLD_BATCH_NORM = "--fold-batch-norm"
FLAG_STRIP_UNUSED = "--strip-unused"
# adopt
FLAG_INPUT = "--input"  # the graph's input placeholder
FLAG_LOGITS = "--logits"
FLAG_LABELS = "--labels"
FLAG_LABELS_OFFSET = "--labels-offset"
FLAG_IMAGES = "--images"
FLAG_OP_LIBRARY = "--op-library"  # doctor too
FLAG_ALLOW_OP = "--allow-op"  # doctor, infer, adopt, the drift probe: an op the graph scan may let through
FLAG_ENVIRONMENT = "--environment"
FLAG_ENVIRONMENT_NAME = "--environment-name"
FLAG_REFERENCE = "--reference"
# reexport (and the drift matrix's re-exported variants)
FLAG_CLEAR_DEVICES = "--clear-devices"
FLAG_STRIP_DEFAULT_ATTRS = "--strip-default-attrs"
# doctor, probe, bench, heatmap
FLAG_MANIFEST = "--manifest"
FLAG_NO_RUN = "--no-run"
FLAG_PLAN = "--plan"
FLAG_BATCH = "--batch"
FLAG_REPEATS = "--repeats"
FLAG_PROFILE = "--profile"
FLAG_PEAK = "--peak"
FLAG_REPORT = "--report"


def allow_op_arguments(names) -> tuple:
    """FLAG_ALLOW_OP NAME for each name: how the host passes --allow-op on to a container module."""
    return tuple(word for name in names for word in (FLAG_ALLOW_OP, name))


# --- the one error line a container prints before exiting non-zero ------------------------------
ERROR_PREFIX = "coldchain: error: "


def error_line(message: str) -> str:
    return ERROR_PREFIX + " ".join(message.splitlines())


def last_error(stderr: str) -> Optional[str]:
    """The message of the last error line in a container's stderr, or None."""
    found = None
    for line in stderr.splitlines():
        if line.startswith(ERROR_PREFIX):
            found = line[len(ERROR_PREFIX):]
    return found


# --- progress: the lines a container logs for people (incontainer.common.log) ---------------------
# Each starts with one of these, and the host shows exactly these at its default log level (the rest of
# a container's stderr, TensorFlow's own chatter, only with -v).
PROGRESS_KIT = "coldchain:"  # the kit's own, which the error line starts with too
PROGRESS_PREFIXES = tuple(f"{name}:" for name in (
    "make_data", "data", "train", "selftest", "freeze", "adopt", "reexport", "convert", "doctor", "infer", "probe",
    "bench_infer")) + (PROGRESS_KIT,)


def is_progress(line: str) -> bool:
    return line.startswith(PROGRESS_PREFIXES)


# --- exit codes: one meaning each, host and container ---------------------------------------------
class Exit:
    OK = 0
    UNEXPECTED = 1  # drift-test: a case's outcome is not the expected one
    USAGE = 2  # bad input: a file, an option, a configuration value
    MODEL_BLOCKED = 3  # this runtime cannot load or run the model (doctor, pre-flight, import, run)
    GOLDEN_MISMATCH = 4  # the model computes other numbers here than where its golden was made
    PREPROCESSING_MISMATCH = 5  # this runtime's preprocessing does not reproduce the golden input
    WHEELHOUSE = 11  # a wheel could not be fetched or does not match its lock's hash
    DAEMON = 12  # no container engine answers
    BASE_IMAGE = 13  # no base image could be pulled or built
    BUILD = 14  # an image build failed
    CONTAINER = 15  # a container failed in a way the kit does not classify
    OUTPUT = 16  # an output could not be written; nothing was replaced
    TIMEOUT = 17  # a container ran past its time limit and was killed
    ENGINE = 18  # the container engine refused a request
    OUT_OF_MEMORY = 19  # a container was killed for exceeding its memory limit
    IMAGE_CORRUPT = 20  # images --verify: an image's files differ from the record made when it was built
    EMULATION = 21  # an image for another machine needs qemu emulation this host lacks and cannot set up
    # The host CLI's own bug (an exception no handler knew): not 1, which a CI job reads as a drift verdict.
    # 70 is sysexits' EX_SOFTWARE. A container's internal error is CONTAINER (15), with its log tail.
    INTERNAL = 70
    # 128 + the signal's number, as a shell reports a process the signal ended.
    HANGUP = 129  # SIGHUP: the terminal or SSH session went away
    INTERRUPTED = 130
    TERMINATED = 143  # SIGTERM: a cancelled CI job, `timeout`, `kill`


EXIT_MEANINGS = {
    Exit.OK: "success",
    Exit.UNEXPECTED: "a drift case's outcome is not the expected one",
    Exit.USAGE: "bad input (the message names the file or option, and the fix)",
    Exit.MODEL_BLOCKED: "this runtime cannot load or run the model",
    Exit.GOLDEN_MISMATCH: "the golden probe failed: the model computes other numbers here",
    Exit.PREPROCESSING_MISMATCH: "this runtime's preprocessing does not reproduce the golden input",
    Exit.WHEELHOUSE: "a wheel is missing or does not match its lock",
    Exit.DAEMON: "no Docker daemon answers",
    Exit.BASE_IMAGE: "no base image could be pulled or built",
    Exit.BUILD: "an image build failed",
    Exit.CONTAINER: "a container failed unexpectedly",
    Exit.OUTPUT: "an output could not be written (nothing was replaced)",
    Exit.TIMEOUT: "a container hung past its time limit and was killed",
    Exit.ENGINE: "the Docker daemon refused a request",
    Exit.OUT_OF_MEMORY: "a container was killed for exceeding its memory limit",
    Exit.IMAGE_CORRUPT: "images --verify: an image's files differ from their build-time record, or its SBOM from its lock",
    Exit.EMULATION: "an image for another machine (arm64) needs qemu emulation this host cannot set up (root)",
    Exit.INTERNAL: "an internal error of coldchain on the host (a bug: rerun with -v and report it)",
    Exit.HANGUP: "hung up (SIGHUP); the running container and staged outputs were removed",
    Exit.INTERRUPTED: "interrupted (Ctrl-C)",
    Exit.TERMINATED: "terminated (SIGTERM); the running container and staged outputs were removed",
}

# --- outcomes of a drift case and finding codes of the doctor -------------------------------------
OUTCOME_BIT_EXACT = "bit-exact"
OUTCOME_PASS = "pass"
PASS_OUTCOMES = (OUTCOME_BIT_EXACT, OUTCOME_PASS)
# Bit-exact where the case's effective numerics equal the golden's, within tolerance where not.
EXPECT_AS_REFERENCE = "as-reference"
# Pass where the runtime computed in fp32, golden-mismatch (naming reduced-precision) where it chose a
# lower precision by itself: the outcome of a runtime-default case on every CPU.
EXPECT_AS_PRECISION = "as-precision"
# A case whose model variant cannot exist for this model (an adopted model has no training run).
OUTCOME_NOT_APPLICABLE = "not-applicable"


class Code:
    """Finding codes. FAILURE_CLASSES lists the ones that can block a model, most fundamental first."""

    NOT_A_GRAPH = "not-a-frozen-graph"
    MODEL_UNREADABLE = "model-unreadable"
    SHA256_MISMATCH = "model-sha256-mismatch"
    MANIFEST_INVALID = "manifest-invalid"
    GRAPH_TOO_NEW = "graph-too-new"
    GRAPH_TOO_OLD = "graph-too-old"
    BAD_CONSUMER = "bad-consumer"
    OP_LIBRARY_ARCH = "op-library-wrong-architecture"  # an x86-64 .so on aarch64: no loader can map it
    OP_LIBRARY_ABI = "op-library-abi-mismatch"
    OP_LIBRARY_MISSING = "op-library-missing"
    OP_LIBRARY_LOAD = "op-library-load-failed"
    UNREGISTERED_OP = "unregistered-op"
    DANGEROUS_OP = "dangerous-op"  # reads/writes files, runs Python, or talks to the network (diagnosis/opscan.py)
    UNKNOWN_ATTR = "unknown-attr"
    CONVERSION_FAILED = "conversion-failed"  # tf2onnx or OpenVINO's reader rejected the graph
    BATCH_NORM_TRAINING = "batch-norm-training-mode"
    TRAINING_OP = "training-op"
    REF_DTYPE = "ref-dtype"
    DEVICE_CLUSTER = "device-cluster"
    DEVICE_UNAVAILABLE = "device-unavailable"
    MISSING_NODE = "missing-node"
    LOAD_ERROR = "load-error"
    RUN_ERROR = "run-error"
    PREPROCESSING_MISMATCH = "preprocessing-mismatch"
    GOLDEN_MISMATCH = "golden-mismatch"
    # Warnings only: they never decide an outcome.
    NEWER_PRODUCER = "newer-producer"
    ENVIRONMENT_DIFFERS = "environment-differs"
    OP_LIBRARY_UNVERSIONED = "op-library-unversioned"
    LOCK_DRIFT = "lock-drift"
    NUMERICS_DIFFER = "numerics-differ"
    REDUCED_PRECISION = "reduced-precision"  # the runtime computed below fp32 without being told to
    DECODER_DIFFERS = "decoder-differs"  # another decoder library, version, libjpeg or IDCT than the golden's
    INPUT_PATH_DIFFERS = "input-path-differs"  # encoded goldens preprocess to other pixels, within tolerance


FAILURE_CLASSES = (
    Code.NOT_A_GRAPH, Code.MODEL_UNREADABLE, Code.SHA256_MISMATCH, Code.MANIFEST_INVALID, Code.GRAPH_TOO_NEW,
    Code.GRAPH_TOO_OLD, Code.BAD_CONSUMER, Code.OP_LIBRARY_ARCH, Code.OP_LIBRARY_ABI, Code.OP_LIBRARY_MISSING, Code.OP_LIBRARY_LOAD,
    Code.UNREGISTERED_OP, Code.DANGEROUS_OP, Code.UNKNOWN_ATTR, Code.CONVERSION_FAILED, Code.BATCH_NORM_TRAINING,
    Code.TRAINING_OP, Code.REF_DTYPE,
    Code.DEVICE_CLUSTER, Code.DEVICE_UNAVAILABLE, Code.MISSING_NODE, Code.LOAD_ERROR, Code.RUN_ERROR,
    Code.PREPROCESSING_MISMATCH, Code.GOLDEN_MISMATCH,
)
WARNING_CODES = (Code.NEWER_PRODUCER, Code.ENVIRONMENT_DIFFERS, Code.OP_LIBRARY_UNVERSIONED, Code.LOCK_DRIFT,
                 Code.NUMERICS_DIFFER, Code.REDUCED_PRECISION, Code.DECODER_DIFFERS, Code.INPUT_PATH_DIFFERS)
OUTCOMES = PASS_OUTCOMES + FAILURE_CLASSES
SEVERITY_ERROR = "error"
SEVERITY_WARNING = "warning"
# Which stage of the doctor found a finding.
STAGE_STATIC = "static"
STAGE_IMPORT = "import"
STAGE_RUN = "run"
STAGE_MANIFEST = "manifest"


def most_fundamental(codes) -> Optional[str]:
    """The outcome a set of blocking codes is named after."""
    ranked = [code for code in codes if code in FAILURE_CLASSES]
    return min(ranked, key=FAILURE_CLASSES.index) if ranked else None


def exit_for_outcome(outcome: Optional[str]) -> int:
    if outcome is None or outcome in PASS_OUTCOMES:
        return Exit.OK
    if outcome == Code.GOLDEN_MISMATCH:
        return Exit.GOLDEN_MISMATCH
    if outcome == Code.PREPROCESSING_MISMATCH:
        return Exit.PREPROCESSING_MISMATCH
    return Exit.MODEL_BLOCKED


# --- what a drift case's probe prints (one JSON object on its last stdout line) -------------------
@dataclass
class ProbeReport:
    outcome: Optional[str] = None
    loaded: bool = False
    load_error: Optional[str] = None
    diagnosis: Optional[Dict[str, Any]] = None
    preprocessing: Optional[Dict[str, Any]] = None
    golden: Optional[Dict[str, Any]] = None
    latency: Optional[Dict[str, Any]] = None
    numerics: Optional[Dict[str, Any]] = None  # what this runtime computed with (numerics.effective())
    timing: Optional[Dict[str, Any]] = None  # seconds per stage, import to latency
    runtime: Optional[Dict[str, Any]] = None  # name, converter and runtime versions, declared/effective precision
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> "ProbeReport":
        """Raises ValueError when the text is not a whole probe report."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the probe report is not a JSON object")
        names = {field.name for field in fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise ValueError(f"the probe report lacks {', '.join(missing)}")
        return cls(**{name: data[name] for name in names})

    @classmethod
    def many_from_json(cls, text: str) -> Dict[str, "ProbeReport"]:
        """{case name: report}, as the probe prints them; ValueError when it is not whole."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the probe output is not a JSON object")
        return {name: cls.from_json(json.dumps(report)) for name, report in data.items()}


# --- a golden check infer passed, kept by the host for the next run (FLAG_GOLDEN_VERIFIED) --------
@dataclass(frozen=True)
class KeptGolden:
    """A passing golden check as the host keeps it (coldchain/steps/golden_cache.py) and hands it back to
    infer (FLAG_GOLDEN_VERIFIED, MOUNT_GOLDEN_VERIFIED). It stands in for the probe only while the model,
    the effective numerics and the runtime are the ones it ran with: any other would compute other bits."""

    golden: Dict[str, Any]  # infer's summary["golden"] of the run that passed
    model: Optional[str] = None  # the model's sha256
    numerics: Optional[Dict[str, Any]] = None  # numerics.effective() of that run
    runtime: Optional[Dict[str, Any]] = None  # name, versions, declared/effective precision
    verified_at: Optional[str] = None  # UTC, ISO 8601

    MATCHED = ("model", "numerics", "runtime")  # what must equal the run at hand (from infer's summary)

    @classmethod
    def from_summary(cls, summary: Dict[str, Any], verified_at: str) -> Optional["KeptGolden"]:
        """The check worth keeping from infer's summary: one that passed and ran just now (a kept one is
        not dated again); None otherwise."""
        golden = summary.get("golden") or {}
        if golden.get("ok") is not True or "cached" in golden:
            return None
        return cls(golden=golden, verified_at=verified_at, **{key: summary.get(key) for key in cls.MATCHED})

    def to_dict(self) -> Dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "KeptGolden":
        """Raises ValueError when the text is not a kept check (not an object, or no golden result in it)."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("golden"), dict):
            raise ValueError("not a kept golden check (a JSON object with a golden result)")
        return cls(**{field.name: data.get(field.name) for field in fields(cls)})

    def differences(self, summary: Dict[str, Any]) -> List[str]:
        """Which of MATCHED differ between the run this check was made in and the one at hand ([]: none)."""
        return [key for key in self.MATCHED if getattr(self, key) != summary.get(key)]

    def reused(self) -> Dict[str, Any]:
        """The golden result this check stands in for, marked as kept from when it ran."""
        return {**self.golden, "cached": {"verified_at": self.verified_at}}


# --- numerics: what decides the bits a run produces (runtime.effective_numerics records them) ---
# The CPU features that change TensorFlow's kernels or its oneDNN default: recorded per run in the
# container and for the host of a drift report or benchmark (hostinfo).
NUMERICS_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16",
                  "amx_int8")
# The instructions that multiply-add u8 x s8 into int32 without an int16 step, which 8-bit weights can
# saturate: int8 results may depend on them (golden/quantized.py names them when an int8 check misses).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# x86-64 CPU models a drift case may run under (qemu user emulation, `emulate_cpu`), each with the CPU
# flags its CPUID shows (qemu 7.2's TCG has no AVX-512 at all): another CPU class's int8 kernels on this
# machine. The container reads /proc/cpuinfo, which stays the host's, so it takes these instead.
EMULATED_CPUS = {"Haswell-v4": ("avx", "avx2", "fma")}
ENV_EMULATED_CPU = "COLDCHAIN_EMULATED_CPU"  # set by the host for a run under emulation: the CPU model
MOUNT_EMULATOR = "/opt/coldchain-emulator/qemu-x86_64"  # the host's static qemu-x86_64, mounted read-only
VENV_PYTHON = "/opt/venv/bin/python"  # every kit image's Python (Dockerfile.train, Dockerfile.infer)
# Those on which TensorFlow turns oneDNN on by itself unless TF_ENABLE_ONEDNN_OPTS says otherwise: the
# container names the ones that decided a run, the host classes its CPU by them.
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def numerics_differences(reference: Optional[dict], actual: Optional[dict]) -> Optional[List[str]]:
    """What differs between two effective settings ([] = same); None when either is unknown, so
    bit-exactness cannot be promised."""
    if not reference or not actual:
        return None
    differences = []
    for key in ("tensorflow", "isa", "threads_effective", "device", "machine"):
        if reference.get(key) != actual.get(key):
            differences.append(f"{key} {reference.get(key)} -> {actual.get(key)}")
    ref_onednn, act_onednn = reference.get("onednn") or {}, actual.get("onednn") or {}
    if ref_onednn.get("enabled") is None or act_onednn.get("enabled") is None:
        return None
    for key in ("enabled", "max_cpu_isa"):
        if ref_onednn.get(key) != act_onednn.get(key):
            differences.append(f"oneDNN {key} {ref_onednn.get(key)} -> {act_onednn.get(key)}")
    return differences


def describe_numerics(numerics: Optional[dict]) -> str:
    if not numerics:
        return "unknown numerics"
    onednn = numerics.get("onednn") or {}
    state = {True: "on", False: "off", None: "unknown"}[onednn.get("enabled")]
    intra, inter = numerics.get("threads_effective") or ["?", "?"]
    emulated = f", emulated CPU {numerics['emulated_cpu']} (qemu)" if numerics.get("emulated_cpu") else ""
    return (f"TF {numerics.get('tensorflow')}, oneDNN {state} ({onednn.get('decided_by')}), threads {intra}/{inter}"
            f"{emulated}")



# --- paths: containers name the host's files, never their mount points ---------------------------
def map_paths(text: str, mapping: Dict[str, str]) -> str:
    """Replace each mount point (at a path boundary) with the host path it stands for."""
    for mount in sorted(mapping, key=len, reverse=True):
        host = mapping[mount].rstrip("/") or "/"
        text = re.sub(r"(?<![\w/.-])" + re.escape(mount.rstrip("/")) + r"(?![\w-])", lambda _: host, text)
    return text


# --- start to first prediction: the phases infer reports, host's and container's, in order ------
STARTUP_KEY = "startup"  # in infer's summary
STARTUP_PHASES = (
    ("host_cli_s", "host: interpreter and coldchain imports"),
    ("host_checks_s", "host: daemon, lock and image checks"),
    ("container_start_s", "container: create and start, up to the interpreter"),
    ("interpreter_s", "container: interpreter and the kit's imports"),
    ("tensorflow_import_s", "container: import tensorflow"),
    ("verify_s", "container: manifest, golden arrays and model sha256"),
    ("doctor_s", "container: pre-flight (static checks, graph import)"),
    ("session_s", "container: session and runner set-up"),
    ("golden_s", "container: golden probe"),
    ("first_batch_s", "container: decode and predict the first batch"),
    ("finish_s", "container exit and removal, output moved into place"),
)


def seconds_since_process_start() -> Optional[float]:
    """How long this process has been running, from the kernel's record of its start (10 ms ticks):
    covers the interpreter's own start-up, which no timer inside the program can see."""
    import os

    try:
        with open("/proc/self/stat") as handle:
            after_name = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(after_name[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None
