"""The `coldchain` command (python -m coldchain): one module per stage group, each command parsing its
options into a request for coldchain.steps or coldchain.bench; base.py is the one place where errors
become messages and exit codes."""

from . import bench, chain, drift, environments, models, signing, transfer  # noqa: F401 - each registers its commands
from .base import main

__all__ = ["main"]
