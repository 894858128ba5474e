"""The drift matrix as drift/ and the CLI have always imported it: parsed in environments/matrix.py
(below steps/, which reads it too), its expectations judged in drift/judging.py."""

from __future__ import annotations

from ..environments.matrix import (DEFAULT_VARIANT, EXPECTATIONS, FINDING_CODES, OP_BUILD_ENV, SCHEMA_VERSION,  # noqa: F401
                                   CaseSpec, EnvSpec, Matrix, Settings, VariantSpec, environment_image_spec, known,
                                   load_matrix, matrix_file)
from .judging import not_applicable, outcome_matches, required_findings, resolve_expectation  # noqa: F401
