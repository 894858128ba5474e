"""Inference runtimes besides TensorFlow (ONNX Runtime, OpenVINO) and their converted artefacts."""
