"""The doctor's exit code for every graph in a directory, from its own command-line entry point, in one
process (one container per runtime instead of one per graph). Prints {graph: exit code} as JSON.
Usage: python verdicts.py DIR [--allow-soft-placement]"""
import contextlib
import io
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from incontainer.common import run_main  # noqa: E402
from incontainer.diagnosis import doctor  # noqa: E402


def main() -> int:
    directory, flags = sys.argv[1], sys.argv[2:]
    codes = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".pb"):
            with contextlib.redirect_stdout(io.StringIO()):
                codes[name[:-3]] = run_main(doctor.main, [os.path.join(directory, name), "--json", *flags])
    print(json.dumps(codes, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
