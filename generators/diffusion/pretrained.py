"""The pretrained path (`--diffusion-weights DIR`): a local Stable Diffusion inpainting pipeline, adapted to one
defect type with LoRA on its UNet and a learned token for the type (the AnoGen / DefectFill recipe).

DIR is a `StableDiffusionInpaintPipeline` folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/) or a Hugging Face cache entry of one (models--org--name, its newest snapshot); the project never
downloads weights. Training: the base defect images (and their masks, mask + band) are encoded by the VAE; the
UNet, given the noisy latents, the latent mask and the latents of the image with the defect region blanked, and
the prompt with the type's token, learns the DDPM objective inside the region only. Only the LoRA weights (peft,
through diffusers' `add_adapter`) and the token's embedding row train; everything else stays frozen. Sampling is
the pipeline itself, on real train/good images and fresh masks at the downstream resolution, composited so that
outside mask + band the good image is untouched. A checkpoint holds the LoRA weights, the token's embedding and
the weights folder it was trained on (never the pipeline's own weights).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from inspect_train.errors import InputError

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
REQUIRED = ("band", "lora", "prompt", "init_word", "sample", "masks", "train")


def resolve_weights(folder) -> Path:
    """The pipeline folder DIR names (a Hugging Face cache entry: its newest complete snapshot); one clear line
    when it is missing or incomplete."""
    path = Path(str(folder)).expanduser()
    if not path.is_dir():
        raise InputError(f"--diffusion-weights {folder}: folder not found (inspect-train never downloads weights; "
                         "give a local StableDiffusionInpaintPipeline folder or its Hugging Face cache entry)")
    if (path / "snapshots").is_dir():  # models--org--name in the Hugging Face cache
        snapshots = sorted((p for p in (path / "snapshots").iterdir() if (p / "model_index.json").is_file()),
                           key=lambda p: p.stat().st_mtime)
        if snapshots:
            path = snapshots[-1]
    missing = [p for p in ("model_index.json", *PARTS) if not (path / p).exists()]
    if missing:
        raise InputError(f"--diffusion-weights {folder}: not a complete StableDiffusionInpaintPipeline folder "
                         f"(missing {', '.join(missing)})")
    return path.resolve()


def load_pretrained_config(name_or_path: str) -> dict:
    from inspect_train.config_files import read_required_preset

    config, path = read_required_preset(name_or_path, "diffusion", REQUIRED)
    if config.get("mode") != "pretrained":
        raise InputError(f"{path}: not a pretrained diffusion config (mode: pretrained)")
    if "{token}" not in str(config["prompt"]):
        raise InputError(f"{path}: prompt must hold {{token}}, where the defect type's learned token goes")
    return config


def token_of(defect_type: str) -> str:
    return "<" + re.sub(r"[^a-z0-9]+", "-", defect_type.lower()).strip("-") + "-defect>"


def load_pipeline(weights: Path, device):
    """The inpainting pipeline of a local folder, frozen, without progress bars or a safety checker."""
    import diffusers
    from diffusers import StableDiffusionInpaintPipeline

    diffusers.utils.logging.disable_progress_bar()
    try:
        pipe = StableDiffusionInpaintPipeline.from_pretrained(str(weights), local_files_only=True, safety_checker=None,
                                                              requires_safety_checker=False)
    except Exception as err:  # noqa: BLE001 - diffusers raises many types for an unreadable folder
        raise InputError(f"--diffusion-weights {weights}: cannot load it as a StableDiffusionInpaintPipeline "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if int(pipe.unet.config.in_channels) != 9:
        raise InputError(f"--diffusion-weights {weights}: its UNet takes {pipe.unet.config.in_channels} channels, "
                         "not an inpainting UNet's 9")
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False).eval()
    return pipe.to(device)


def multiple_of(pipe) -> int:
    """The side an image must divide by: the VAE's downsampling times the UNet's."""
    return int(pipe.vae_scale_factor) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def lora_config(config: dict):
    from peft import LoraConfig

    lora = config["lora"]
    return LoraConfig(r=int(lora["rank"]), lora_alpha=float(lora.get("alpha", lora["rank"])),
                      init_lora_weights="gaussian", target_modules=list(lora["targets"]))


def add_token(pipe, token: str, init_word: str) -> int:
    """Add `token` to the tokenizer (its embedding row starts as the mean of `init_word`'s); its id."""
    tokenizer, text = pipe.tokenizer, pipe.text_encoder
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([token])
        text.resize_token_embeddings(len(tokenizer))
        ids = tokenizer(init_word, add_special_tokens=False).input_ids or [0]
        rows = text.get_input_embeddings().weight
        with torch.no_grad():
            rows[tokenizer.convert_tokens_to_ids(token)] = rows[ids].mean(0)
    return int(tokenizer.convert_tokens_to_ids(token))


def encode_prompt(pipe, prompts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(pipe.text_encoder.device)
    return pipe.text_encoder(ids)[0]


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def latent_region(hole: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask + band at latent size: a latent pixel counts when any image pixel under it does (thin defects stay)."""
    return F.adaptive_max_pool2d(hole.float(), size)


class Trainables:
    """What the pretrained path trains, as one part for the checkpoint helpers: the LoRA weights of the UNet and
    the token's embedding row (every other row is put back after each step)."""

    def __init__(self, pipe, token_id: int):
        self.pipe, self.token_id = pipe, token_id
        self.rows = pipe.text_encoder.get_input_embeddings().weight
        self.frozen_rows = self.rows.detach().clone()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.pipe.unet.parameters() if p.requires_grad] + [self.rows]

    def keep_other_rows(self) -> None:
        with torch.no_grad():
            keep = torch.ones(self.rows.shape[0], dtype=torch.bool, device=self.rows.device)
            keep[self.token_id] = False
            self.rows[keep] = self.frozen_rows[keep]

    def state_dict(self) -> dict:
        from peft.utils import get_peft_model_state_dict

        return {"lora": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self.pipe.unet).items()},
                "token_embedding": self.rows[self.token_id].detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(self.pipe.unet, state["lora"])
        with torch.no_grad():
            self.rows[self.token_id] = state["token_embedding"].to(self.rows.device)


def train_pretrained(defect_images, defect_masks, good_images, defect_type: str, out_dir: Path, *, config: dict,
                     weights, resolution: int, steps: int | None = None, seed: int = 0, device: str = "cpu",
                     resume: bool = False, progress: bool = True, extra: dict | None = None, dist_ctx=None,
                     on_step=None) -> Path:
    """LoRA + a token for `defect_type` on the pipeline in `weights`; the inputs are uint8 at `resolution`, as for
    the from-scratch painter (generators/diffusion/train.py). Returns the checkpoint path."""
    from diffusers import DDPMScheduler

    from generators.dfmgan.training import (StageLog, check_images, device_of, resume_from, run_state,
                                            save_on_main, to_float)
    from generators.diffusion.checkpoint import KIND, load_painter_checkpoint, painter_file
    from generators.diffusion.train import region_mse
    from generators.inpaint.masks import BaseMasks, DeformOptions, flip_turn
    from generators.inpaint.networks import feather
    from generators.inpaint.train import painter_grid
    from inspect_train.distributed import DistContext

    ctx = dist_ctx or DistContext()
    stage, band, res = dict(config["train"]), int(config["band"]), int(resolution)
    check_images(defect_images, res, f"defect '{defect_type}'", defect_masks)
    check_images(good_images, res, "train/good")
    channels = int(defect_images.shape[1])
    masks_bool = defect_masks > 0
    if (masks_bool.flatten(1).sum(1) == 0).any():
        raise InputError(f"defect '{defect_type}': a base image has an empty mask")
    folder = resolve_weights(weights)
    dev = device_of(device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / painter_file(defect_type)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    total = int(steps if steps is not None else stage["steps"])
    batch = int(stage["batch"])
    options = DeformOptions.from_config(config.get("masks"))

    torch.manual_seed(seed)
    pipe = load_pipeline(folder, dev)
    if res % multiple_of(pipe):
        raise InputError(f"--diffusion-weights: the resolution {res} must divide by {multiple_of(pipe)} for this "
                         "pipeline")
    token = token_of(defect_type)
    token_id = add_token(pipe, token, str(config["init_word"]))
    pipe.unet.add_adapter(lora_config(config))
    trainables = Trainables(pipe, token_id)
    trainables.rows.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": trainables.parameters()[:-1], "lr": float(stage["lr"])},
                             {"params": [trainables.rows], "lr": float(stage.get("token_lr", stage["lr"])),
                              "weight_decay": 0.0}], weight_decay=float(stage.get("weight_decay", 0.0)))
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    sf = float(pipe.vae.config.scaling_factor)
    prompt = str(config["prompt"]).format(token=token)
    parts = {"trainables": trainables, "opt": opt}
    step = 0
    resumed = resume and ckpt_path.exists()
    if resumed:
        step = resume_from(load_painter_checkpoint(ckpt_path), ckpt_path, parts, ctx, dev, seed,
                           "another pipeline or LoRA config", extra)

    def snapshot() -> dict:
        own = trainables.state_dict()
        return {"kind": KIND, "mode": "pretrained", "config": config, "channels": channels, "resolution": res,
                "defect_type": defect_type, "weights": str(folder), "token": token, **own,
                "n_train_images": int(defect_images.shape[0]), "base_masks": masks_bool.cpu(),
                **run_state(parts, ctx, dev, step, seed), **(extra or {})}

    base = BaseMasks({defect_type: masks_bool}, res, dev, options)
    show = min(4, int(good_images.shape[0]))
    grid_goods = (to_float(good_images[:show], dev) + 1) / 2
    grid_masks = base.draw(show, defect_type, torch.Generator(device=dev).manual_seed(2024))
    grid_reals = to_float(defect_images[torch.arange(show) % defect_images.shape[0]], dev)
    sample = config["sample"]

    def grid():
        painted = paint_pipeline(pipe, prompt, grid_goods, grid_masks, band, int(sample["steps"]),
                                 float(sample.get("guidance", 1.0)), torch.Generator(device=dev).manual_seed(2026))
        return "diffusion/good|mask|painted|real", painter_grid(grid_goods * 2 - 1, grid_masks, painted * 2 - 1,
                                                                grid_reals)

    log = StageLog(stage, total, step, ctx, out_dir / "tb" / painter_file(defect_type)[:-3],
                   f"diffusion LoRA ({defect_type})", progress, tag="diffusion/", shown=["loss"], grid=grid,
                   save=lambda: save_on_main(ctx, snapshot(), ckpt_path), checkpoint=ckpt_path, on_step=on_step)
    real_masks = masks_bool.float()
    timesteps = int(scheduler.config.num_train_timesteps)
    try:
        while step < total:
            rng = torch.Generator(device=dev).manual_seed(int(seed) * 1_000_003 + step)
            idx = torch.randint(0, defect_images.shape[0], (batch,), generator=rng, device=rng.device).cpu()
            both = flip_turn(torch.cat([to_float(defect_images[idx], dev), real_masks[idx].to(dev)], 1), rng,
                             options.flips, options.turns)
            images, masks = to_rgb(both[:, :channels]), both[:, channels:]
            hole = (feather(masks, band) > 0).to(images.dtype)
            with torch.no_grad():
                latents = pipe.vae.encode(images).latent_dist.sample(generator=rng) * sf
                masked = pipe.vae.encode(images * (1 - hole)).latent_dist.mode() * sf
            region = latent_region(hole, tuple(latents.shape[-2:]))
            noise = torch.randn(latents.shape, generator=rng, device=rng.device).to(dev)
            t = torch.randint(0, timesteps, (batch,), generator=rng, device=rng.device).to(dev)
            noisy = scheduler.add_noise(latents, noise, t)
            hidden = encode_prompt(pipe, [prompt] * batch)  # the token's row is trained: with gradients
            out = pipe.unet(torch.cat([noisy, region, masked], 1), t, encoder_hidden_states=hidden).sample
            kind = scheduler.config.prediction_type
            target = scheduler.get_velocity(latents, noise, t) if kind == "v_prediction" else noise
            loss = region_mse(out, target, region)
            log.watch({"loss": loss}, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainables.parameters(), float(stage.get("grad_clip", 1.0)))
            opt.step()
            trainables.keep_other_rows()
            step += 1
            log.step_done(step, lambda: {"loss": loss})
    finally:
        log.close()
    if not log.saved and not resumed:
        log.save()
    ctx.barrier()
    return ckpt_path


@torch.no_grad()
def paint_pipeline(pipe, prompt: str, goods01: torch.Tensor, masks: torch.Tensor, band: int, steps: int,
                   guidance: float, rng: torch.Generator) -> torch.Tensor:
    """The pipeline paints into mask + band on `goods01` ([0, 1]); composited, so outside it the good image
    stays bit for bit; back to the goods' channels."""
    from generators.inpaint.networks import composite, feather

    n, channels, h, w = goods01.shape
    alpha = feather(masks, band)
    out = pipe(prompt=[prompt] * n, image=to_rgb(goods01), mask_image=(alpha > 0).float(), height=h, width=w,
               num_inference_steps=int(steps), guidance_scale=float(guidance), generator=rng, output_type="pt").images
    out = out.to(goods01.device, goods01.dtype)
    if channels == 1:
        out = out.mean(1, keepdim=True)
    return composite(goods01, out.clamp(0, 1), alpha).contiguous()


class PretrainedPainters:
    """The pretrained painters of one weights folder: one pipeline, one LoRA adapter and token per defect type."""

    def __init__(self, states: dict[str, dict], device, sample_steps: int | None = None):
        from peft.utils import set_peft_model_state_dict

        folders = {s["weights"] for s in states.values()}
        if len(folders) > 1:
            raise InputError(f"diffusion: the painters were trained on different pipelines {sorted(folders)}")
        first = next(iter(states.values()))
        self.pipe = load_pipeline(resolve_weights(folders.pop()), device)
        self.config = first["config"]
        sample = self.config["sample"]
        self.steps = int(sample_steps if sample_steps is not None else sample["steps"])
        self.guidance, self.band = float(sample.get("guidance", 1.0)), int(self.config["band"])
        self.prompts = {}
        for defect_type, state in states.items():
            token_id = add_token(self.pipe, state["token"], str(self.config["init_word"]))
            with torch.no_grad():
                self.pipe.text_encoder.get_input_embeddings().weight[token_id] = state["token_embedding"].to(device)
            name = re.sub(r"[^A-Za-z0-9_]+", "_", defect_type)
            with warnings.catch_warnings():  # one adapter per defect type on one UNet is the point
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                self.pipe.unet.add_adapter(lora_config(state["config"]), adapter_name=name)
            set_peft_model_state_dict(self.pipe.unet, state["lora"], adapter_name=name)
            self.prompts[defect_type] = (name, str(self.config["prompt"]).format(token=state["token"]))
        self.pipe.unet.requires_grad_(False)

    def paint(self, goods01, masks, defect_type: str, rng: torch.Generator) -> torch.Tensor:
        adapter, prompt = self.prompts[defect_type]
        self.pipe.unet.set_adapter(adapter)
        return paint_pipeline(self.pipe, prompt, goods01, masks, self.band, self.steps, self.guidance, rng)
