"""The empty-mask guard of stage 2: never ship a defect generator whose masks have collapsed to nothing.

Every real defect image has a defect, but stage 2 can shrink the masks past the defect to an empty mask: on
Kolektor's cracks one run drew 80% empty masks at its last step while a fifth of them were empty 400 steps earlier
(docs/dfmgan.md). A downstream model then learns from "defect" samples whose mask says nothing is there.

Every `mask_guard_every` steps (stage-2 config; 0 = off) the guard draws a fixed batch from G_ema, logs the share
of empty masks and, while it is at most `empty_mask_limit`, keeps a copy of G_ema (a resumed call first checks the
G_ema it starts from). At the last step of a training call, if the share is above the limit, G_ema is put back to
the latest copy that was not, so that copy is what the checkpoint saves and what the sampler draws; it says so on
the console and records every check in the checkpoint (`mask_guard`), a resumed call's after its earlier calls'.
Nothing here looks at test data: the guard reads only the generator's own samples.
"""

from __future__ import annotations

import copy

import torch

from generators.dfmgan.training import fixed_latents


class EmptyMaskGuard:
    def __init__(self, G_ema, stage: dict, device, label: str, n: int = 64, say=print):
        self.G_ema, self.label, self.say = G_ema, label, say
        self.every = int(stage.get("mask_guard_every", 0) or 0)
        self.limit = float(stage.get("empty_mask_limit", 0.5))
        self.z = fixed_latents(n, G_ema.z_dim, device, 2030)
        self.z_defect = fixed_latents(n, G_ema.z_dim, device, 2031)
        self.noise = G_ema.make_noise(n, device, torch.Generator().manual_seed(2032))
        self.history: list[list] = []  # [step, empty share]
        self.kept: tuple[int, float, dict] | None = None  # the latest step at or under the limit, its share, G_ema
        self.restored_from: int | None = None

    @property
    def enabled(self) -> bool:
        return self.every > 0

    @torch.no_grad()
    def empty_share(self) -> float:
        """The share of the fixed batch whose mask has no defect pixel (mask logits >= 0 nowhere)."""
        G = self.G_ema
        _, logits, _ = G.synthesize_defect(G.mapping(self.z), G.defect_mapping(self.z_defect), self.noise,
                                           with_good=False)
        return float((logits >= 0).flatten(1).any(1).logical_not().float().mean())

    def carry(self, saved: dict | None) -> None:
        """A resumed call keeps the checks of the calls before it, so the checkpoint records the whole run."""
        if self.enabled and saved:
            self.history = [list(check) for check in saved.get("checks", [])]

    def start(self, step: int, writer=None) -> None:
        """A resumed call checks the G_ema it starts from, so a collapse in this call can go back to it."""
        if self.enabled and step > 0:
            self._check(step, writer)

    def _check(self, step: int, writer) -> float:
        share = self.empty_share()
        if self.history[-1:] != [[step, round(share, 4)]]:  # a resumed call's first check repeats the saved last one
            self.history.append([step, round(share, 4)])
        if writer is not None:
            writer.add_scalar("stage2/empty_masks", share, step)
        if share <= self.limit:
            self.kept = (step, share, copy.deepcopy(self.G_ema.state_dict()))
        return share

    def after_step(self, step: int, last: bool, writer=None) -> None:
        """Check at every `every` steps and at the last one; at the last, put a collapsed G_ema back."""
        if not self.enabled or not (step % self.every == 0 or last):
            return
        share = self._check(step, writer)
        if share <= self.limit or not last:
            return
        if self.kept is not None:
            kept_step, kept_share, state = self.kept
            self.G_ema.load_state_dict(state)
            self.restored_from = step
            self.say(f"stage 2 ({self.label}): {share:.0%} of the masks are empty at step {step} (limit "
                     f"{self.limit:.0%}); keeping the generator of step {kept_step} ({kept_share:.0%} empty)")
        else:
            self.say(f"stage 2 ({self.label}): {share:.0%} of the masks are empty at step {step} (limit "
                     f"{self.limit:.0%}) and no check passed; the generator is kept as trained: try another --seed "
                     "or fewer --defect-steps")

    def record(self) -> dict | None:
        """What goes into the checkpoint: the checks, and which step's G_ema it holds when the guard acted."""
        if not self.enabled:
            return None
        kept = self.kept[0] if self.restored_from is not None and self.kept else None
        return {"every": self.every, "limit": self.limit, "checks": self.history, "collapsed_at": self.restored_from,
                "g_ema_from_step": kept}
