"""Pieces shared by both training stages: inputs, optimisers, EMA, logging, finite-loss guard."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from generators.dfmgan.checkpoint import TrainingDiverged, rng_state, save_checkpoint, set_rng_state
from inspect_train.errors import InputError, ResumeRefused
from inspect_train.tb_writer import open_writer


def check_images(images: torch.Tensor, size: int | tuple[int, int], what: str,
                 masks: torch.Tensor | None = None) -> None:
    """uint8 (N, C, H, W) images at the generator's size (H, W), or N x N (the square painters), masks
    (N, 1, H, W) beside them."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise InputError(f"{what}: expected a uint8 (N, C, H, W) tensor")
    if images.shape[0] < 1:
        raise InputError(f"{what}: no images")
    if images.shape[1] not in (1, 3):
        raise InputError(f"{what}: {images.shape[1]} channels (expected 1 or 3)")
    if tuple(images.shape[2:]) != tuple(size):
        raise InputError(f"{what}: images are {images.shape[2]}x{images.shape[3]} (HxW), the config needs "
                         f"{size[0]}x{size[1]} (resize them first)")
    if masks is not None:
        if masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[0] != images.shape[0] \
                or tuple(masks.shape[2:]) != tuple(images.shape[2:]):
            raise InputError(f"{what}: masks must be (N, 1, H, W) matching the images")


def device_of(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: CUDA is not available here")
    return device


PRECISIONS = ("auto", "fp32", "bf16")


class Runtime:
    """How a GAN stage runs on its device. `precision` in the stage config: auto (bf16 autocast on CUDA, fp32
    elsewhere), fp32 or bf16 (bf16 runs on the CPU too, which is how the tests exercise it). The weights, the
    optimiser and the losses stay fp32; only the forward passes run under autocast. channels_last activations on
    CUDA, where the convolution kernels prefer them."""

    def __init__(self, stage: dict, device: torch.device):
        choice = str(stage.get("precision", "auto"))
        if choice not in PRECISIONS:
            raise InputError(f"precision '{choice}': choose one of {', '.join(PRECISIONS)}")
        if choice == "auto":
            choice = "bf16" if device.type == "cuda" else "fp32"
        self.precision, self.device = choice, device
        self.channels_last = device.type == "cuda"

    def autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare(self, *modules: nn.Module) -> None:
        """channels_last weights and activations (CUDA): G lays out its features, D its input."""
        if not self.channels_last:
            return
        for module in modules:
            module.to(memory_format=torch.channels_last)
            if hasattr(module, "channels_last"):
                module.channels_last = True


@contextmanager
def cudnn_autotune(device: torch.device):
    """cudnn.benchmark for the GAN stage (fixed shapes every step, so the autotuned kernels pay off), then the
    process's previous settings back: the downstream tasks turn it off for their determinism."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def to_float(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] on the training device."""
    return images_u8.to(device, non_blocking=True).float() / 127.5 - 1.0


def adam(params, stage: dict, lazy_interval: int | None = None) -> torch.optim.Adam:
    """Adam with the StyleGAN2 lazy-regularisation correction of lr and betas."""
    lr, (b1, b2) = float(stage["lr"]), stage["betas"]
    c = lazy_interval / (lazy_interval + 1) if lazy_interval else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(float(b1) ** c, float(b2) ** c), eps=1e-8)


def r1_weight(stage: dict, pixels: int) -> float:
    """The stage's R1 gamma: a number, or `auto` for the reference's rule 0.0002 * H * W / batch (StyleGAN2-ADA's
    automatic setting, 0.0002 * res^2 / batch), with the global batch: one rule for every resolution and batch."""
    value = stage["r1_gamma"]
    if value == "auto":
        return 0.0002 * int(pixels) / int(stage["batch"])
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"r1_gamma '{value}' must be a number or 'auto'") from None


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, stage: dict, step: int) -> None:
    """Exponential moving average with a half-life in kimg, ramped up early in training."""
    batch = int(stage["batch"])
    ema_nimg = float(stage.get("ema_kimg", 10.0)) * 1000
    rampup = stage.get("ema_rampup")
    if rampup:
        ema_nimg = min(ema_nimg, (step + 1) * batch * float(rampup))
    beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
    # one fused call per tensor list instead of a Python loop of small kernels (matters on a GPU)
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - beta)
    buffers = list(ema.buffers())
    if buffers:
        torch._foreach_copy_(buffers, list(model.buffers()))


class FiniteGuard:
    """Stops a run on a NaN/inf loss without a host sync every step: `watch()` keeps, on the device, whether each
    loss has gone non-finite and its first bad value and step; `check()` reads that once (at log steps and before
    every checkpoint write, see StageLog), so a run stops within `log_every` steps of a divergence and no
    checkpoint after it is written. Across processes the flags are summed first, so every rank stops together
    (a rank that stopped alone would leave the others waiting in an all-reduce); every rank watches the same
    loss names at the same steps."""

    def __init__(self, ckpt: Path, ctx=None):
        self.ckpt, self.ctx = Path(ckpt), ctx
        self.state: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # name -> (bad, value, step)

    def watch(self, losses: dict[str, torch.Tensor], step: int) -> None:
        for name, loss in losses.items():
            value = torch.as_tensor(loss).detach().float().reshape(())
            bad = ~torch.isfinite(value)
            if name not in self.state:
                self.state[name] = (bad, value, torch.full((), step, device=value.device))
                continue
            was_bad, first_value, first_step = self.state[name]
            new = bad & ~was_bad
            self.state[name] = (was_bad | bad, torch.where(new, value, first_value),
                                torch.where(new, torch.full_like(first_step, step), first_step))

    def check(self) -> None:
        if not self.state:
            return
        names = sorted(self.state)
        flags = torch.stack([self.state[n][0].float() for n in names])
        if self.ctx is not None and self.ctx.enabled:
            dist.all_reduce(flags)
        if not bool(flags.any()):  # the one host read
            return
        bad = [(int(self.state[n][2]), n, float(self.state[n][1])) for n, f in zip(names, flags.tolist()) if f]
        step, name, value = min(bad)  # the earliest divergence
        raise TrainingDiverged(
            f"training stopped at step {step}: loss {name} is {value}; "
            f"the last good checkpoint is {self.ckpt if self.ckpt.exists() else '(none written yet)'}")


def fixed_latents(n: int, z_dim: int, device: torch.device, seed: int = 2024) -> torch.Tensor:
    """The same latents at every grid, whatever the training seed, so grids are comparable over time."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed)).to(device)


def sync_buffers(ctx, module: nn.Module) -> None:
    """Average float buffers (the mapping's tracked mean w) over ranks: the mean of equal-sized local
    batch means is the global batch mean, so this is what one process with the global batch computes."""
    if ctx is None or not ctx.enabled:
        return

    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for b in bufs:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


def gather_rng_states(ctx, device: torch.device) -> list[dict]:
    """Every rank's RNG state (rank order), so a resumed multi-process run continues exactly."""
    state = rng_state(device)
    if ctx is None or not ctx.enabled:
        return [state]

    out = [None] * ctx.world_size
    dist.all_gather_object(out, state)
    return out


def restore_rng(state: dict, ctx, device: torch.device, seed: int, step: int) -> None:
    """This rank's saved RNG state; from a run with another process count, a fresh per-rank seed."""
    ranks = state.get("rng_ranks") or [state["rng"]]
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    if len(ranks) == world:
        set_rng_state(ranks[rank], device)
    else:
        torch.manual_seed(seed + (ctx.seed_offset() if ctx is not None else 0) + 7919 * step)


def resume_from(state: dict, path: Path, parts: dict, ctx, device: torch.device, seed: int, trained_with: str,
                extra: dict | None = None) -> int:
    """Continue a stopped run from its loaded checkpoint `state`: refuse one trained on another base set than
    `extra` names, put back the weights and optimiser states (`parts`: name -> module or optimiser, the
    checkpoint's keys) and this rank's RNG; return the step to continue from. Shared by every trainer that
    resumes (DFMGAN stages, the inpaint painter)."""
    _check_same_base(state, path, extra)
    try:
        for name, part in parts.items():
            part.load_state_dict(state[name])
    except (RuntimeError, ValueError, KeyError):
        raise ResumeRefused(f"{path}: cannot resume, it was trained with {trained_with}") from None
    step = int(state["step"])
    restore_rng(state, ctx, device, seed, step)
    return step


def _check_same_base(state: dict, path: Path, extra: dict | None) -> None:
    """Continuing a checkpoint trained on another base set or partition would mix in images this run's base set
    does not hold (test images, when the split changed)."""
    for key in ("base", "base_images", "partition"):
        if extra and key in extra and key in state and state[key] != extra[key]:
            raise ResumeRefused(f"{path}: was trained on another {key.replace('_', ' ')}")


def run_state(parts: dict, ctx, device: torch.device, step: int, seed: int) -> dict:
    """What resume needs: the step, the state of every part and every rank's RNG state.
    Collective under torchrun: every rank calls it at the same steps."""
    rngs = gather_rng_states(ctx, device)
    return {"step": step, "seed": seed, **{name: part.state_dict() for name, part in parts.items()},
            "rng": rngs[0], "rng_ranks": rngs, "world_size": ctx.world_size}


def save_on_main(ctx, state: dict, path: Path) -> None:
    """Rank 0 writes (atomically); the other ranks only took part in gathering the state."""
    if ctx.is_main:
        save_checkpoint(state, path)


class StageLog:
    """The bookkeeping around a stage's steps, the same for both stages: a progress bar, TensorBoard
    scalars and grids, and when to log, draw and save (`log_every`, `grid_every`, `save_every` of the
    stage config; always at the last step). Only rank 0 shows and writes; saving is collective.

    `tag` prefixes the scalar names, `shown` are the names in the bar, `grid()` -> (name, image) is drawn
    on rank 0, `save()` writes the checkpoint at `checkpoint`; `watch()` losses stop the run when non-finite;
    `on_step(step)` lets benchmarks time the steps alone.
    Terms computed only every few steps (lazy R1) go through `keep()`: their last value is logged at every
    log step, since their interval need not land on one (R1 at steps 0, 4, 8... never met log steps 10, 20...)."""

    def __init__(self, stage: dict, total: int, step: int, ctx, tb_dir: Path, desc: str, progress: bool, *,
                 tag: str, shown: list[str], grid, save, checkpoint: Path, on_step=None):
        self.total, self.ctx, self.on_step = total, ctx, on_step
        self.tag, self.shown, self.grid, self._write = tag, shown, grid, save
        self.guard = FiniteGuard(checkpoint, ctx)
        self.log_every, self.save_every = int(stage.get("log_every", 100)), int(stage.get("save_every", 1000))
        self.grid_every = int(stage.get("grid_every", self.save_every))
        self.writer = open_writer(tb_dir) if ctx.is_main else None
        self.bar = tqdm(total=total, initial=step, disable=not progress or not ctx.is_main, desc=desc, unit="step")
        self.saved = False
        self.kept: dict[str, torch.Tensor] = {}

    def watch(self, losses: dict[str, torch.Tensor], step: int) -> None:
        """Losses to stop on when they turn NaN/inf (checked at log steps and before each save)."""
        self.guard.watch(losses, step)

    def save(self) -> None:
        """Write a checkpoint, unless a watched loss went non-finite since the last good one."""
        self.guard.check()
        self._write()

    def keep(self, values: dict[str, torch.Tensor]) -> None:
        """Remember the latest value of intermittent loss terms; logged with the others at each log step."""
        self.kept.update({k: v.detach() for k, v in values.items()})

    def _due(self, step: int, every: int) -> bool:
        return step % every == 0 or step == self.total

    def step_done(self, step: int, scalars) -> None:
        """After step `step`; `scalars()` -> {name: loss tensor}, averaged over ranks when logged."""
        self.bar.update(1)
        if self.on_step is not None:
            self.on_step(step)
        if self._due(step, self.log_every):
            self.guard.check()
            # every rank computed the kept terms at the same steps, so the collective mean sees the same keys
            values = {k: self.ctx.mean(v).item() for k, v in {**self.kept, **scalars()}.items()}
            self.bar.set_postfix({k: f"{values[k]:.3f}" for k in self.shown if k in values})
            if self.writer is not None:
                for k, v in values.items():
                    self.writer.add_scalar(self.tag + k, v, step)
        if self.writer is not None and self._due(step, self.grid_every):
            with torch.no_grad():
                name, image = self.grid()
            self.writer.add_image(name, image, step)
        if self._due(step, self.save_every):
            self.save()
            self.saved = True

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
