"""The export pieces tasks share: a traced TorchScript graph and the check of an exported graph against PyTorch.

A task whose graph returns one tensor of probabilities (classify, segment) traces it and checks the exported
file's output on a fresh batch element by element; a task with another output (detect: boxes per image) brings
its own compile and check (see `ShippedTask` in inspect_train.tasks.registry).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inspect_train.errors import InputError

TOLERANCE = 1e-4


def first_line(err: Exception) -> str:
    """An exporter's error in one line: its type and the first line of its message."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


@contextmanager
def quiet_jit():
    """torch.jit.trace/save/load still work but warn that TorchScript is deprecated; the user chose the format."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=FutureWarning)
        yield


def trace_torchscript(graph: nn.Module, example: torch.Tensor, meta: dict):
    """The graph traced on `example`; a failed trace is one line, not the tracer's traceback."""
    try:
        with torch.no_grad(), quiet_jit():
            return torch.jit.trace(graph, example, check_trace=False)
    except Exception as err:  # noqa: BLE001 - the tracer raises many types; the user needs its first line
        raise InputError(f"TorchScript trace of '{meta['architecture'].get('name')}' failed: "
                         f"{first_line(err)}") from None


def run_exported(path: Path, fmt: str, images: torch.Tensor) -> np.ndarray:
    """The exported file's output for `images`, run the way a deployment would run it (CPU)."""
    if fmt == "onnx":
        import onnxruntime  # heavy optional dependency: only checking an ONNX export needs it

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    with quiet_jit():
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(images).numpy()


def check_probabilities(graph: nn.Module, path: Path, fmt: str, images: torch.Tensor) -> None:
    """The exported file must give the graph's output on `images` to within TOLERANCE, in the same shape."""
    with torch.no_grad():
        expected = graph(images).numpy()
    got = run_exported(path, fmt, images)
    if got.shape != expected.shape:
        raise InputError(f"check failed: the exported graph gives shape {got.shape}, PyTorch {expected.shape}")
    diff = float(np.abs(got - expected).max())
    print(f"check: max abs difference to PyTorch on a batch of {len(images)}: {diff:.3g}")
    if not diff <= TOLERANCE:
        raise InputError(f"check failed: the exported graph differs from PyTorch by {diff:.3g} "
                         f"(more than {TOLERANCE:g}); nothing written")
