#!/usr/bin/env python3
"""Used by the Makefile: name the unknown variables given on the command line and suggest the
nearest known one. Usage: nearest-make-var.py UNKNOWN... -- KNOWN..."""
import difflib
import sys

args = sys.argv[1:]
split = args.index("--") if "--" in args else len(args)
unknown, known = args[:split], args[split + 1:]
parts = []
for name in unknown:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    parts.append(f"{name} (did you mean {close[0]}?)" if close else name)
print(f"unknown make variable {', '.join(parts)}; known: {' '.join(sorted(known))}")
