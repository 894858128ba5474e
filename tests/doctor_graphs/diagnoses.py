"""The doctor's exit code and JSON diagnosis for each graph given (files, or directories of .pb files),
from its own command-line entry point, in one process (one TensorFlow import for them all). Prints
{graph name: {"exit": code, "diagnosis": the doctor's JSON}} as JSON.
Usage: python diagnoses.py PATH... [-- DOCTOR FLAGS...]"""
import contextlib
import io
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from incontainer.common import run_main  # noqa: E402
from incontainer.diagnosis import doctor  # noqa: E402


def graphs(paths):
    for path in paths:
        if os.path.isdir(path):
            yield from (os.path.join(path, name) for name in sorted(os.listdir(path)) if name.endswith(".pb"))
        else:
            yield path


def main() -> int:
    words = sys.argv[1:]
    paths, flags = (words[:words.index("--")], words[words.index("--") + 1:]) if "--" in words else (words, [])
    found = {}
    for path in graphs(paths):
        name = os.path.splitext(os.path.basename(path))[0]
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            code = run_main(doctor.main, [path, "--json", *flags])
        found[name] = {"exit": code, "diagnosis": json.loads(printed.getvalue())}
    print(json.dumps(found, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
