"""The model being trained tells the online dataset what to draw, from training signals only (the arm names
that ask for it are in inspect_train.arms). Modes:

- `types`: the defect type of each synthetic sample is drawn with shares mixed from uniform (`floor` of them) and
  a softmax (at `temperature`) of each type's running training loss, on the real and synthetic rows the model has
  just trained on; in a mixture the generator of each sample is chosen the same way from the running loss per
  (generator, type) of its synthetic rows.
- `hard`: `candidates` samples are drawn for each one kept; the current model scores them in a no-grad pass
  (the task's per-sample loss) and the hardest are kept. One candidate is the unsteered draw.

Only the batches the model trains on feed the running losses, so no test image is ever scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from inspect_train.arms import STEER_MODES
from inspect_train.errors import InputError


@dataclass
class SteerSettings:
    mode: str = "off"
    temperature: float = 0.5
    floor: float = 0.3
    candidates: int = 2
    momentum: float = 0.9  # of the running losses, per training step


def mixed_shares(losses: list[float | None], temperature: float, floor: float) -> list[float]:
    """floor x uniform + (1 - floor) x softmax(loss / temperature); a key not seen yet counts as the mean loss."""
    n = len(losses)
    seen = [v for v in losses if v is not None]
    if not seen:
        return [1.0 / n] * n
    mean = sum(seen) / len(seen)
    values = [mean if v is None else v for v in losses]
    top = max(values)
    weights = [math.exp((v - top) / temperature) for v in values]
    total = sum(weights)
    return [floor / n + (1.0 - floor) * w / total for w in weights]


class _Quota:
    """Whole counts that follow fractional shares over steps: each key's unspent credit carries over, so a 0.3
    share of 2 samples a step gives 3 samples every 5 steps, with no random draw."""

    def __init__(self, n_keys: int):
        self.credit = [0.0] * n_keys

    def split(self, total: int, shares: list[float]) -> list[int]:
        self.credit = [c + total * s for c, s in zip(self.credit, shares)]
        counts = [max(0, math.floor(c)) for c in self.credit]
        left = total - sum(counts)
        order = sorted(range(len(shares)), key=lambda k: (self.credit[k] - counts[k], -k), reverse=True)
        for k in order[:max(0, left)]:
            counts[k] += 1
        while sum(counts) > total:  # credits above the step's total (a share moved): take from the largest
            k = max(range(len(counts)), key=lambda i: counts[i])
            counts[k] -= 1
        self.credit = [c - k for c, k in zip(self.credit, counts)]
        return counts


class Steering:
    """Running training losses per defect type and per (generator, type), and the shares they steer."""

    def __init__(self, settings: SteerSettings, types: list[str], sources: list[str]):
        if settings.mode not in STEER_MODES:
            raise InputError(f"--steer {settings.mode}: choose from {', '.join(STEER_MODES)}")
        self.settings, self.types, self.sources = settings, list(types), list(sources)
        self.type_loss: dict[str, float] = {}
        self.source_loss: dict[tuple[str, str], float] = {}
        self._type_quota = _Quota(len(self.types))
        self._source_quota = {t: _Quota(len(self.sources)) for t in self.types}
        self.drawn: dict[str, int] = {t: 0 for t in self.types}
        self.drawn_by_source: dict[str, int] = {name: 0 for name in self.sources}

    @property
    def steers_types(self) -> bool:
        return self.settings.mode == "types"

    def _update(self, table: dict, key, value: float) -> None:
        m = self.settings.momentum
        table[key] = value if key not in table else m * table[key] + (1.0 - m) * value

    def observe(self, row_types: list[str | None], row_sources: list[str | None], losses: torch.Tensor) -> None:
        """One training step's per-row losses; `row_types` names each row's defect type (None: a good image),
        `row_sources` the generator of each synthetic row (None: a real row)."""
        values = losses.detach().float().cpu().tolist()
        by_type: dict[str, list[float]] = {}
        by_source: dict[tuple[str, str], list[float]] = {}
        for kind, source, value in zip(row_types, row_sources, values):
            if kind in self.drawn:
                by_type.setdefault(kind, []).append(value)
                if source is not None:
                    by_source.setdefault((source, kind), []).append(value)
        for kind, got in by_type.items():
            self._update(self.type_loss, kind, sum(got) / len(got))
        for key, got in by_source.items():
            self._update(self.source_loss, key, sum(got) / len(got))

    def type_shares(self) -> list[float]:
        if not self.steers_types:
            return [1.0 / len(self.types)] * len(self.types)
        return mixed_shares([self.type_loss.get(t) for t in self.types], self.settings.temperature,
                            self.settings.floor)

    def type_counts(self, total: int, even_counts: list[int]) -> list[int]:
        """How many synthetic samples of each type this step (`even_counts`: the unsteered split, kept as is)."""
        counts = self._type_quota.split(total, self.type_shares()) if self.steers_types else list(even_counts)
        for t, c in zip(self.types, counts):
            self.drawn[t] += c
        return counts

    def source_shares(self, defect_type: str, makers: list[str]) -> list[float]:
        """Shares of the generators in `makers` (those that make `defect_type`) for its samples."""
        if not self.steers_types or len(makers) == 1:
            return [1.0 / len(makers)] * len(makers)
        return mixed_shares([self.source_loss.get((s, defect_type)) for s in makers], self.settings.temperature,
                            self.settings.floor)

    def source_counts(self, defect_type: str, makers: list[str], total: int) -> list[int]:
        shares = self.source_shares(defect_type, makers)
        full = [0.0] * len(self.sources)
        for name, share in zip(makers, shares):
            full[self.sources.index(name)] = share
        counts = self._source_quota[defect_type].split(total, full)
        for name, count in zip(self.sources, counts):
            self.drawn_by_source[name] += count
        return [counts[self.sources.index(name)] for name in makers]

    def record(self) -> dict:
        """What results.json keeps of an arm's steering: the settings and how the shares and losses ended."""
        total = sum(self.drawn.values())
        return {
            "mode": self.settings.mode, "temperature": self.settings.temperature, "floor": self.settings.floor,
            "candidates": self.settings.candidates if self.settings.mode == "hard" else 1,
            "drawn_share": {t: round(c / total, 4) if total else 0.0 for t, c in self.drawn.items()},
            "final_share": {t: round(s, 4) for t, s in zip(self.types, self.type_shares())},
            "running_loss": {t: round(v, 5) for t, v in sorted(self.type_loss.items())},
            **({"drawn_share_by_generator": {name: round(c / total, 4) if total else 0.0
                                             for name, c in self.drawn_by_source.items()},
                "running_loss_by_generator": {f"{s}/{t}": round(v, 5)
                                              for (s, t), v in sorted(self.source_loss.items())}}
               if len(self.sources) > 1 else {}),
        }

    def log(self, writer, step: int) -> None:
        if writer is None:
            return
        for t, share in zip(self.types, self.type_shares()):
            writer.add_scalar(f"steer/share/{t}", share, step)
            if t in self.type_loss:
                writer.add_scalar(f"steer/loss/{t}", self.type_loss[t], step)
