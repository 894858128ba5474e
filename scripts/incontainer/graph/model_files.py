"""A model directory read once: its manifest, golden arrays and verified model bytes, each read and
checked a single time for everything one process does with the model (infer, the doctor, the drift
probe, the speed bench). What could not be read is kept as the error that says so, so a strict caller
raises it in its place and words (ModelFiles.require) and the doctor reports it as a finding.

ModelLoader reads the manifest and hashes the model in a thread, so that the reading (hashlib and
file reads release the GIL) overlaps TensorFlow's import: start() before `import tensorflow`,
files() after it joins the thread and finishes the reading. No TensorFlow here.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..common import InsideError, sha256_bytes
from ..contract import (ENV_SIGNED_FILES, ENV_SIGNED_MODEL_DIR, MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE,
                        SIGNED_DIRECTORY_CHANGED, Code)
from .graphdef import model_path, read_model_bytes
from .manifest import ManifestInvalid, Problem, load_golden_arrays, read_manifest, validate, validate_directory


def verify_model_bytes(path: str, data: bytes, manifest: dict) -> None:
    """The model file's bytes against the manifest's sha256 (both hashes named in full)."""
    expected = manifest["model"]["sha256"]
    actual = sha256_bytes(data)
    if actual != expected:
        raise InsideError(f"{path} has sha256 {actual}, but the manifest says {expected} ({len(data)} bytes, "
                          f"manifest says {manifest['model'].get('size_bytes')}): the file was modified, truncated "
                          "or replaced after freezing - copy the model directory again", code=Code.SHA256_MISMATCH)


def verified_model_path(model_dir: str, manifest: dict) -> str:
    return os.path.join(model_dir, manifest["model"].get("file", MODEL_FILE))


def read_verified_model(model_dir: str, manifest: dict) -> bytes:
    """The model file's bytes, checked against the manifest's sha256."""
    path = verified_model_path(model_dir, manifest)
    data = read_model_bytes(path, f"copy {MODEL_FILE} next to {MANIFEST_FILE}")
    verify_model_bytes(path, data, manifest)
    return data


def signed_files(model_dir: str) -> Optional[Dict[str, str]]:
    """The (file -> sha256) list the host verified against a trusted signature, or None: no --trust, or
    `model_dir` is not the signed one (the drift probe's variants, made from it, are read beside it)."""
    text = os.environ.get(ENV_SIGNED_FILES)
    scope = os.environ.get(ENV_SIGNED_MODEL_DIR)
    if not text or (scope and os.path.normpath(scope) != os.path.normpath(model_dir)):
        return None
    return json.loads(text)


def _files_on_disk(model_dir: str) -> List[str]:
    found = []
    for root, dirs, names in os.walk(model_dir):
        dirs[:] = [d for d in dirs if not (root == model_dir and d.startswith(".git"))]
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), model_dir).replace(os.sep, "/")
            if relative != SIGNATURE_FILE and not (root == model_dir and name.startswith(".git")):
                found.append(relative)
    return found


def verify_signed(model_dir: str, signed: Dict[str, str], read: Dict[str, bytes]) -> None:
    """Every file of the mounted directory against the list the host verified: the bytes this process
    already read (`read`, by real path: the model) hashed as they are, the rest read again. Closes the gap
    between the host's check and the mount: a file changed, added or removed in between is refused."""
    fix = f"{SIGNED_DIRECTORY_CHANGED}; copy it again from where it was signed"
    for name in sorted(set(signed) | set(_files_on_disk(model_dir))):
        path = os.path.join(model_dir, name)
        if name not in signed:
            raise InsideError(f"{path}: not covered by the verified signature (added) - {fix}")
        data = read.get(os.path.realpath(path))
        if data is None:
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                raise InsideError(f"{path}: missing or unreadable, but signed - {fix}") from None
        if sha256_bytes(data) != signed[name]:
            raise InsideError(f"{path}: sha256 differs from the verified signature - {fix}")


@dataclass
class ModelFiles:
    """What the model directory holds, read once; each part either read and checked, or the error."""
    model_file: str
    model_dir: str
    manifest_path: str
    has_manifest: bool  # one was named, or one lies beside the model (the doctor's manifest stage runs)
    read_error: Optional[InsideError] = None  # the manifest missing or not JSON
    problems: List[Problem] = field(default_factory=list)  # its schema, field by field
    manifest: Optional[dict] = None  # set once the schema holds
    model_bytes: Optional[bytes] = None  # the manifest's model file, read (verified unless model_error)
    verified_path: Optional[str] = None
    model_error: Optional[InsideError] = None  # unreadable, or a sha256 other than the manifest's
    arrays: Optional[Dict[str, Any]] = None  # golden.npz, verified against the manifest
    golden_error: Optional[InsideError] = None
    directory_problems: List[Problem] = field(default_factory=list)  # golden, labels, preprocessing

    def require(self, consistent: bool = True) -> "ModelFiles":
        """Everything read and valid, or the first problem raised, in the order infer has always named
        them: the manifest, its schema, golden.npz, the directory's consistency (labels against the
        classes, the preprocessing the golden was made with; `consistent`), the model's sha256."""
        if self.read_error is not None:
            raise self.read_error
        if self.problems:
            raise ManifestInvalid(self.manifest_path, self.problems)
        if self.golden_error is not None:
            raise self.golden_error
        if consistent and self.directory_problems:
            raise ManifestInvalid(self.manifest_path, self.directory_problems)
        if self.model_error is not None:
            raise self.model_error
        return self

    def golden_arrays(self) -> Dict[str, Any]:
        if self.arrays is None:
            raise self.golden_error or InsideError(f"{self.model_dir} has no usable golden probe")
        return self.arrays

    def bytes_of(self, path: str) -> Optional[bytes]:
        """The bytes already read for this file (the manifest's model), else None."""
        if self.model_bytes is None or self.verified_path is None:
            return None
        return self.model_bytes if os.path.realpath(path) == os.path.realpath(self.verified_path) else None


class ModelLoader:
    """Reads a model directory into ModelFiles once. start() reads the manifest and hashes the model in
    a thread; files() waits for it, then reads golden.npz and checks the directory. The graph file is
    the one the manifest names (an adopted text-format graph keeps its .pbtxt) unless given."""

    def __init__(self, model_dir: str, model_file: Optional[str] = None, manifest_path: Optional[str] = None):
        self.model_dir = model_dir
        self.model_file = model_file
        self.explicit_manifest = manifest_path
        self._thread: Optional[threading.Thread] = None
        self._failure: Optional[BaseException] = None  # an unexpected error in the thread, raised by files()
        self._files: Optional[ModelFiles] = None
        self._done = False

    @classmethod
    def for_model(cls, model: str, manifest_path: Optional[str] = None) -> "ModelLoader":
        """A model named by its directory or by its graph file (graphdef.model_path's reading)."""
        if os.path.isdir(model):
            return cls(model, manifest_path=manifest_path)
        return cls(os.path.dirname(model) or ".", model_file=model, manifest_path=manifest_path)

    def start(self) -> "ModelLoader":
        """Read and hash in a thread (e.g. while TensorFlow imports)."""
        if self._thread is None and self._files is None:
            self._thread = threading.Thread(target=self._read_in_thread, name="model-loader", daemon=True)
            self._thread.start()
        return self

    def _read_in_thread(self) -> None:
        try:
            self._read()
        except BaseException as error:  # noqa: BLE001 - raised in the caller's thread by files()
            self._failure = error

    def files(self) -> ModelFiles:
        """Everything read (the problems kept, not raised; ModelFiles.require raises them)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
        if self._files is None:
            self._read()
        if not self._done:
            self._check_directory(self._files)
            self._done = True
        return self._files

    def _read(self) -> None:
        """The manifest and its schema, then the model's bytes and sha256."""
        path = self.explicit_manifest or os.path.join(self.model_dir, MANIFEST_FILE)
        files = ModelFiles(model_file="", model_dir=self.model_dir, manifest_path=path,
                           has_manifest=bool(self.explicit_manifest) or os.path.isfile(path))
        raw = None
        try:
            raw = read_manifest(self.model_dir, self.explicit_manifest)
        except InsideError as error:
            files.read_error = error
        files.model_file = self.model_file or self._named_file(raw)
        if files.read_error is None:
            files.problems = validate(raw)
            if not files.problems:
                files.manifest = raw
                self._read_model(files)
        signed = signed_files(self.model_dir)
        if signed is not None:
            read = {os.path.realpath(files.verified_path): files.model_bytes} if files.model_bytes is not None else {}
            verify_signed(self.model_dir, signed, read)
        self._files = files

    def _named_file(self, manifest: Any) -> str:
        """The graph file of the directory: graphdef.model_path, from the manifest just read (that of
        the directory; model_path reads it when another was named)."""
        if self.explicit_manifest:
            return model_path(self.model_dir)[0]
        section = manifest.get("model") if isinstance(manifest, dict) else None
        recorded = section.get("file") if isinstance(section, dict) else None
        plain = isinstance(recorded, str) and os.path.basename(recorded) == recorded and recorded not in ("", ".", "..")
        return os.path.join(self.model_dir, recorded if plain else MODEL_FILE)

    @staticmethod
    def _read_model(files: ModelFiles) -> None:
        files.verified_path = verified_model_path(files.model_dir, files.manifest)
        try:
            files.model_bytes = read_model_bytes(files.verified_path, f"copy {MODEL_FILE} next to {MANIFEST_FILE}")
            verify_model_bytes(files.verified_path, files.model_bytes, files.manifest)
        except InsideError as error:
            files.model_error = error

    @staticmethod
    def _check_directory(files: ModelFiles) -> None:
        """golden.npz against the manifest, then what only the files beside it can tell."""
        if files.manifest is None:
            return
        try:
            files.arrays = load_golden_arrays(files.model_dir, files.manifest)
        except InsideError as error:
            files.golden_error = error
            files.directory_problems = [Problem("golden", str(error))]
            return
        files.directory_problems = validate_directory(files.model_dir, files.manifest, files.arrays)
