"""inspect-train: few-shot industrial inspection with in-loop synthetic defects.

The Python API (inspect_train.api): classify, segment, detect, evaluate_gen, generate, predict, export, each
taking its command's options as keyword arguments and returning a Run (output folder, results).
"""

__version__ = "0.1.0"

from inspect_train.api import Run, classify, detect, evaluate_gen, export, generate, predict, segment, train  # noqa: E402

__all__ = ["Run", "classify", "segment", "detect", "train", "evaluate_gen", "generate", "predict", "export",
           "__version__"]
