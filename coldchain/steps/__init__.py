"""Steps on the host: the one runner for in-container modules, the pipeline steps with their staged
outputs, the doctor's host side, the inference thread policy."""
