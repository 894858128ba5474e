"""In-container half of coldchain: data generation, training, freezing, preflight and inference.

Modules run as ``python -m incontainer.<module>``. Only ``train``, ``freeze`` and ``model``
import tf_slim; everything the inference image needs (``infer``, ``preflight``, ``common``,
``manifest``, ``images``, ``preprocess``) stays importable without it.
"""
