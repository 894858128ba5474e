"""coldchain: train and freeze ResNet v1 50 in one container, infer in another, and test the
drift between them. This package is the host side: it drives Docker and never imports TensorFlow."""

__version__ = "0.1.0"
