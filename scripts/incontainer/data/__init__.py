"""Inputs: image files, preprocessing with slim's presets, labels files and datasets."""
