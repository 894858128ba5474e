"""One model in one process, set up once for infer, the drift probe and the speed bench: the model
directory read and verified once (graph/model_files.py), the doctor run on what was read, the names
the manifest gives (input, golden tensors, the predictions' output), TF32 off, then the runtime opened
on the model (a TensorFlow session, or ONNX Runtime / OpenVINO on the model's converted artefact or a
conversion made here), with its golden runner, its predictions runner, the outputs-only model and the
manifest as a declared precision is judged (bf16: tolerances widened).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional, Tuple

from ..common import InsideError
from ..contract import (DEFAULT_BF16_TOLERANCE, MODEL_FILE, PRECISION_BF16, PRECISION_FP32, RUNTIME_ONNXRUNTIME,
                        RUNTIME_TENSORFLOW, RUNTIME_TFLITE, artefact_target)
from ..data.preprocess import PreprocessSpec
from ..diagnosis.doctor import Diagnosis, DoctorOptions, diagnose
from ..graph import manifest as manifests
from ..graph.model_files import ModelFiles
from .check import batch_limit, golden_tensors, missing_tensors, session_runner, with_precision_tolerance


@dataclass(frozen=True)
class SessionOptions:
    runtime: str = RUNTIME_TENSORFLOW
    precision: str = PRECISION_FP32
    bf16_tolerance: float = DEFAULT_BF16_TOLERANCE
    load_op_libraries: bool = False  # the doctor loads the model's shipped ops/ libraries (runs their code)
    allow_soft_placement: bool = True
    threads: Optional[Tuple[int, int]] = None  # intra-/inter-op threads; None: the manifest's recommendation
    quick_graph_optimization: bool = False  # skip the grappler passes that do nothing to a CPU inference graph
    artefact: bool = False  # ONNX Runtime/OpenVINO: the model's verified converted artefact, not a conversion here
    conversion_cache: Optional[str] = None  # a conversion here kept between runs in this directory
    allowed_ops: tuple = ()  # --allow-op: ops the doctor's graph scan lets through
    xnnpack: bool = True  # TFLite: XNNPACK on (LiteRT's default), or the builtin kernels alone
    golden_bound: Optional[float] = None  # a quantized model's declared probability-error bound
    converted_root: Optional[str] = None  # artefact: read <root>/<target>/, not the model's converted/


class ModelSession:
    """The model, read once, diagnosed on what was read, and opened in one runtime."""

    def __init__(self, files: ModelFiles, options: SessionOptions = SessionOptions()):
        self.files = files
        self.options = options
        self.model_dir = files.model_dir
        self.diagnosis: Optional[Diagnosis] = None
        self.graph = None  # the imported tf.Graph
        self.session = None  # TensorFlow's session
        self.backend = None  # ONNX Runtime's or OpenVINO's (runtimes.backends.Backend)
        self.golden_run = None  # batch -> every golden tensor
        self.predict = None  # batch -> {"out": the predictions' output}
        self.graph_optimization: Optional[dict] = None
        self.artefact: Optional[dict] = None  # the converted artefact's conversion record
        self.conversion: Optional[str] = None  # a conversion here: "converted", or "kept" from the cache
        self.conversion_s: Optional[float] = None
        self._graph_def = None
        self._spec: Optional[PreprocessSpec] = None
        self._judged: Optional[dict] = None
        self._alone = None

    # --- what was read ------------------------------------------------------------------------
    @property
    def manifest(self) -> Optional[dict]:
        return self.files.manifest

    @property
    def arrays(self) -> dict:
        return self.files.golden_arrays()

    @property
    def spec(self) -> PreprocessSpec:
        if self._spec is None:
            self._spec = PreprocessSpec.from_json(self.manifest["preprocessing"], self.files.manifest_path)
        return self._spec

    @property
    def graph_def(self):
        """The doctor's parse of the model; without a diagnosis, the verified bytes parsed here."""
        if self._graph_def is None:
            from ..graph.graphdef import parse_graph_def

            self._graph_def = parse_graph_def(self.files.model_bytes, self.files.verified_path)
        return self._graph_def

    @property
    def threads(self) -> Tuple[int, int]:
        if self.options.threads is not None:
            return self.options.threads
        recommended = self.manifest.get("inference", {})
        return int(recommended.get("intra_op_threads", 0)), int(recommended.get("inter_op_threads", 0))

    # --- the names the manifest gives ---------------------------------------------------------
    @property
    def tensors(self) -> dict:
        """{golden key: tensor name}."""
        return golden_tensors(self.manifest)

    @property
    def input_tensor(self) -> str:
        return manifests.tensor_of(self.manifest["inputs"][0])

    @property
    def output_tensor(self) -> str:
        """What predictions are read from: the probabilities, else the logits (softmax_needed)."""
        return manifests.tensor_of(manifests.output_entry(self.manifest, "probabilities")
                                   or manifests.output_entry(self.manifest, "logits"))

    @property
    def softmax_needed(self) -> bool:
        return manifests.output_entry(self.manifest, "probabilities") is None

    @property
    def output_key(self) -> str:
        """The golden key of the predictions' output."""
        return next(entry["key"] for entry in self.manifest["golden"]["tensors"] if entry["name"] == self.output_tensor)

    @property
    def limit(self) -> Optional[int]:
        return batch_limit(self.manifest)

    @property
    def judged(self) -> dict:
        """The manifest the golden check judges by: at a declared bf16, each golden tensor's abs_tol
        widened to the declared fraction of its magnitude."""
        if self._judged is None:
            self._judged = with_precision_tolerance(self.manifest, self.arrays, self.options.bf16_tolerance) \
                if self.options.precision == PRECISION_BF16 else self.manifest
        return self._judged

    # --- the doctor, then the runtime ---------------------------------------------------------
    def diagnose(self) -> Diagnosis:
        """The doctor's manifest, static and import stages on the files as read (the golden probe is
        the run). Another runtime reads the graph itself: TensorFlow's own refusals become warnings."""
        diagnosis = diagnose(DoctorOptions(model=self.model_dir, load_shipped_op_libraries=self.options.load_op_libraries,
                                           allow_soft_placement=self.options.allow_soft_placement, run=False,
                                           allowed_ops=self.options.allowed_ops),
                             files=self.files)
        if self.options.runtime != RUNTIME_TENSORFLOW:
            diagnosis.for_runtime(self.options.runtime)
        self.diagnosis, self._graph_def, self.graph = diagnosis, diagnosis.graph_def, diagnosis.graph
        return diagnosis

    def missing_tensors(self) -> list:
        """Golden tensors the imported graph lacks (where TensorFlow could not import it, the converter
        names what is missing)."""
        return missing_tensors(self.graph, list(self.tensors.values())) if self.graph is not None else []

    def open(self) -> None:
        """TF32 off (on by default on Ampere+ GPUs, it rounds conv inputs to 10-bit mantissas, far outside
        the golden tolerances: inference keeps full float32 like the CPU-computed golden), then the
        runtime. A conversion here that fails raises runtimes.backends.ConversionFailed."""
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        if self.options.runtime == RUNTIME_TENSORFLOW:
            self._open_tensorflow()
            return
        self.backend = self._artefact_backend() if self.options.artefact else self._converted_here()
        run, key = self.backend.run, self.output_key
        self.golden_run = run
        self.predict = lambda feed: {"out": run(feed)[key]}

    def _open_tensorflow(self) -> None:
        import tensorflow as tf

        from ..graph.graphdef import import_graph
        from ..runtime import quick_graph_optimization

        intra, inter = self.threads
        config = tf.compat.v1.ConfigProto(allow_soft_placement=self.options.allow_soft_placement,
                                          intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter)
        if self.options.quick_graph_optimization:
            self.graph_optimization = quick_graph_optimization(config)
        if self.graph is None:  # not diagnosed (the speed bench): imported here
            self.graph = import_graph(self.graph_def)
        session = self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        input_tensor, output = self.input_tensor, self.output_tensor
        self.golden_run = session_runner(session, self.tensors, input_tensor)
        self.predict = lambda feed: {"out": session.run(output, {input_tensor: feed})}

    def _artefact_backend(self):
        """The model's verified converted artefact (converted/<runtime>/) in ONNX Runtime or OpenVINO."""
        from ..runtimes import backends
        from ..runtimes.artefacts import load_record

        runtime, tensors = self.options.runtime, self.tensors
        target = artefact_target(runtime, self.options.precision)
        directory, record = load_record(self.model_dir, target, self.manifest, self.options.converted_root)
        unknown = sorted(set(tensors.values()) - set(record.get("tensors", {}).values()))
        if unknown or record.get("input") != self.input_tensor:
            raise InsideError(f"{directory} was converted with other inputs/outputs than the manifest names "
                              f"({unknown or record.get('input')}); convert it again: coldchain convert "
                              f"--target {target} {self.model_dir}")
        intra, inter = self.threads
        self.artefact = record
        if runtime == RUNTIME_TFLITE:
            from ..runtimes.tflite import TFLITE_FILE, tflite_backend

            with open(os.path.join(directory, TFLITE_FILE), "rb") as handle:
                return tflite_backend(handle.read(), tensors, self.options.precision, self.options.xnnpack, intra)
        if runtime == RUNTIME_ONNXRUNTIME:
            with open(os.path.join(directory, backends.ONNX_FILE), "rb") as handle:
                return backends.onnxruntime_backend(handle.read(), self.input_tensor, tensors, self.options.precision,
                                                    intra, inter)
        model = backends.read_openvino(os.path.join(directory, backends.OPENVINO_FILES[0]), tensors, directory)
        return backends.openvino_backend(model, tensors, self.options.precision, intra)

    def _converted_here(self):
        """The graph converted in memory (the drift probe's mounts are read-only), kept in the conversion
        cache where one is given; conversion_s is the conversion (or OpenVINO's read) alone."""
        from ..runtimes import backends

        tensors, precision = self.tensors, self.options.precision
        intra, inter = self.threads
        start = time.perf_counter()
        if self.options.runtime == RUNTIME_ONNXRUNTIME:
            model, self.conversion = backends.convert_onnx_kept(self.graph_def, self.input_tensor, tensors,
                                                                self.model_dir, self.options.conversion_cache)
            self.conversion_s = time.perf_counter() - start
            return backends.onnxruntime_backend(model, self.input_tensor, tensors, precision, intra, inter)
        model = backends.read_openvino(os.path.join(self.model_dir, MODEL_FILE), tensors, self.model_dir)
        self.conversion_s = time.perf_counter() - start
        return backends.openvino_backend(model, tensors, precision, intra)

    def predictions_model(self):
        """(golden key, runner): the converted model compiled again for the predictions' output alone
        (the golden check's block outputs cost a bf16 OpenVINO model a reorder and an fp32 copy per
        block on every batch); its caller golden-checks it too (check.check_outputs_only)."""
        if self._alone is None:
            self._alone = (self.output_key, self.backend.outputs_only([self.output_key]))
        return self._alone

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
