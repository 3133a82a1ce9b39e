"""MedPLIB: a biomedical multimodal LLM with pixel-level understanding.

A pure library: model, predictor, data, evaluation and training. It never imports
the platform packages (`webapp`, `worker`), so it can be used from a notebook alone.
"""

__version__ = "0.1.0"
