"""Shared measuring tools: the machine's matmul rate, a timer, peak memory, a table printer.

Speeds are reported next to a reference measured in the same process, so a
figure can be read as a ratio that holds across machines.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path
from typing import Callable

import torch


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], object], device: torch.device, warmup: int = 1, min_seconds: float = 2.0,
                  min_calls: int = 2) -> float:
    """Median-free simple timer: seconds per call over at least `min_seconds` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
        synchronize(device)
    return (time.perf_counter() - start) / calls


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, min_seconds: float = 2.0) -> float:
    """The machine's dense matmul rate, the ceiling a convolutional generator can approach."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = time_per_call(lambda: a @ b, device, warmup=2, min_seconds=min_seconds)
    return 2 * n**3 / seconds / 1e9


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def print_table(header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """1-minute load average and core count: other jobs on a shared machine slow every figure."""
    try:
        import os

        return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    except OSError:
        return "load unknown"


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        return describe_machine(device)
    return f"{cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {load_average()}"


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU visible here")
    return device


def precisions_for(device: torch.device, requested: str | None) -> list[str]:
    """fp32 on CPU; fp32, bf16 (if supported) and fp16 on a GPU, unless a list is given."""
    if requested:
        return [p.strip() for p in requested.split(",") if p.strip()]
    if device.type != "cuda":
        return ["fp32"]
    out = ["fp32"]
    if torch.cuda.is_bf16_supported():
        out.append("bf16")
    return out + ["fp16"]


def run_isolated(script: str, argv: list[str]) -> dict:
    """Run `python script argv` in a fresh process and return the JSON it prints last.

    Why: the peak resident memory of a process only grows, so a per-case peak needs a process per case.
    """
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(script), *argv], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def finish(device: torch.device, header: list[str], rows: list[list[object]], results: list[dict],
           json_path: str | None) -> int:
    """The end of every sweep script: the machine as it is now (load moves), the table, the raw rows."""
    print(f"machine after: {machine_line(device)}")
    print_table(header, rows)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))
    return 0
