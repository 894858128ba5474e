"""Benchmarks (make bench): inference speed across runtimes and settings, the kit's image costs, and
results.json, where every number is kept with its date and CPU."""
