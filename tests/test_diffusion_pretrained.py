"""The pretrained path (`--diffusion-weights DIR`) end to end on a tiny randomly initialised
StableDiffusionInpaintPipeline built here from configs (no weights in the repository, none downloaded): LoRA +
a token trained for a few steps, samples painted into masks on real goods (the good image kept outside mask +
band), a classify arm fed by it, exact resume, and a missing or incomplete folder refused in one line."""

import json
import shutil
import string

import pytest
import torch

from conftest import write_tiny_classify_config
from generators.diffusion.checkpoint import load_painter_checkpoint
from generators.inpaint.networks import feather
from generators.registry import create_generator
from inspect_train.cli import main
from inspect_train.data.category import load_category
from inspect_train.protocol import get_partition, make_manifest


def write_tiny_pipeline(folder):
    """A StableDiffusionInpaintPipeline folder with tiny random parts: 9-channel UNet with cross-attention, a VAE
    that halves the side, a one-layer CLIP text encoder and a character-level CLIP tokenizer."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=9, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, layers_per_block=1)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                        num_hidden_layers=1, max_position_embeddings=16, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + "<>_-.,":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                              model_max_length=16)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


@pytest.fixture(scope="module")
def part(toy):
    return get_partition(make_manifest(toy.index, partitions=2, seed=0), 1)


def config(**train):
    from generators.diffusion.pretrained import load_pretrained_config

    c = load_pretrained_config("diffusion-sd")
    c["train"].update(log_every=1, grid_every=2, save_every=100, **train)
    c["sample"]["steps"] = 2
    return c


def fit(toy, weights, names, out, steps, **kw):
    from generators.diffusion.pretrained import train_pretrained

    subset = toy.defects["hole"].select(names)
    return train_pretrained(subset.images, subset.masks, toy.train_good.images, "hole", out, config=config(),
                            weights=weights, resolution=32, steps=steps, progress=False, **kw)


def test_lora_and_token_train_then_paint_into_masks(toy, part, weights, tmp_path):
    names = part["defects"]["hole"]["base"]
    path = fit(toy, weights, names, tmp_path / "p", steps=3, extra={"base": names})
    state = load_painter_checkpoint(path)
    assert state["mode"] == "pretrained" and state["step"] == 3 and state["token"] == "<hole-defect>"
    assert state["lora"] and all(torch.isfinite(v).all() for v in state["lora"].values())
    assert all("lora" in key for key in state["lora"]), "LoRA weights only, never the pipeline's own"
    gen = create_generator("diffusion", toy, {"hole": names}, "cpu", checkpoints={"hole": path})
    r = torch.Generator().manual_seed(0)
    a, b = gen.sample(3, "hole", r), gen.sample(3, "hole", r)
    assert a.images.shape == a.goods.shape == (3, 3, 32, 32) and 0 <= a.images.min() and a.images.max() <= 1
    outside = (feather(a.masks, 1) == 0).expand_as(a.images)
    assert torch.equal(a.images[outside], a.goods[outside]) and not torch.equal(a.images, a.goods)
    assert not torch.equal(a.images, b.images), "fresh every draw"
    again = create_generator("diffusion", toy, {"hole": names}, "cpu", checkpoints={"hole": path})
    assert torch.equal(again.sample(3, "hole", torch.Generator().manual_seed(0)).images, a.images), "seeded"

    # Resume continues exactly.
    fit(toy, weights, names, tmp_path / "q", steps=2, extra={"base": names})
    resumed = load_painter_checkpoint(fit(toy, weights, names, tmp_path / "q", steps=3, resume=True,
                                          extra={"base": names}))
    assert torch.equal(resumed["token_embedding"], state["token_embedding"])
    for key, value in state["lora"].items():
        assert torch.equal(value, resumed["lora"][key]), key


def test_classify_arm_from_the_pretrained_pipeline(toy_root, weights, tmp_path):
    cfg = write_tiny_classify_config(tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    assert main(["classify", "--data", str(toy_root), "--category", "toy", "--config", str(cfg), "--quiet",
                 "--aug", "diffusion", "--partitions", "1", "--steps", "2", "--diffusion-weights", str(weights),
                 "--diffusion-train-steps", "1", "--diffusion-steps", "2", "--threads", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["arms"] == ["none", "diffusion"]
    assert results["partitions"][0]["runs"]["diffusion"]["synthetic_samples_seen"] > 0
    index = json.loads((out / "generators" / "diffusion" / "index.json").read_text())
    entry = index["defects"]["p1"]["hole"]
    assert entry["weights"] == str(weights.resolve()) and entry["steps"] == 1
    assert load_painter_checkpoint(out / "generators" / "diffusion" / entry["checkpoint"])["mode"] == "pretrained"


def test_missing_or_incomplete_weights_are_one_line(toy_root, weights, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(weights, broken)
    shutil.rmtree(broken / "unet")
    for folder, message in ((tmp_path / "nowhere", "folder not found"), (broken, "missing unet")):
        capsys.readouterr()
        code = main(["classify", "--data", str(toy_root), "--category", "toy", "--aug", "diffusion", "--partitions",
                     "1", "--quiet", "--diffusion-weights", str(folder), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
