"""The host's handle on the contract both sides share: scripts/incontainer/contract.py, loaded from
that one file by path, so the host never imports the container package (or TensorFlow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

CONTRACT_FILE = Path(__file__).resolve().parent.parent / "scripts" / "incontainer" / "contract.py"


def _load():
    spec = importlib.util.spec_from_file_location("coldchain._shared_contract", CONTRACT_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


_contract = _load()
# Re-exported by name, so `from coldchain.contract import Exit` reads like an ordinary import.
globals().update({name: value for name, value in vars(_contract).items() if not name.startswith("_")})
__all__ = [name for name in vars(_contract) if not name.startswith("_")]
