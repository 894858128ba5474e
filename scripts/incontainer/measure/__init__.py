"""Measurements made in containers: inference speed, the drift heatmap, the sandbox report."""
