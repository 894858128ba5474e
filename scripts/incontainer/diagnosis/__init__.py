"""The doctor: whether this runtime can load and run a graph, found in stages, with findings."""
