"""The Stable-Diffusion one-step SR setup (OSEDiff-shaped) on a tiny random-weight SD folder."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from onestep.core.lora import has_lora
from onestep.core.testing import assert_params_changed, assert_params_unchanged, snapshot_params
from onestep.sr.sd import (
    LatentSpace,
    PromptEncoder,
    SDOneStepStudent,
    SDParts,
    SDSuperResolver,
    export_sd_student,
    load_sd_folder,
    load_sd_student,
    sd21_unet_config,
    sd21_vae_config,
    write_tiny_sd_folder,
)

# ---------------------------------------------------------------------------------------------
# Fixtures: one tiny folder per prediction type, written once per module


@pytest.fixture(scope="module")
def eps_dir(tmp_path_factory) -> Path:
    return write_tiny_sd_folder(tmp_path_factory.mktemp("sd_eps") / "sd")


@pytest.fixture(scope="module")
def v_dir(tmp_path_factory) -> Path:
    return write_tiny_sd_folder(
        tmp_path_factory.mktemp("sd_v") / "sd", prediction_type="v_prediction", seed=1
    )


def _resolver(folder: Path, prompt: str = "") -> SDSuperResolver:
    return SDSuperResolver.from_parts(load_sd_folder(folder), scale=4, prompt=prompt)


def _perturb_lora(module: torch.nn.Module) -> None:
    """Give every LoRA factor non-zero values, so an adapter visibly changes the output."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.add_(0.2 * torch.randn_like(p))


# ---------------------------------------------------------------------------------------------
# Folder


def test_tiny_folder_loads_back(eps_dir, v_dir):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    parts = load_sd_folder(eps_dir)
    assert isinstance(parts.unet, UNet2DConditionModel)
    assert isinstance(parts.vae, AutoencoderKL)
    assert parts.unet.config["cross_attention_dim"] == parts.text_encoder.config.hidden_size
    assert parts.scheduler.config.prediction_type == "epsilon"
    assert len(parts.scheduler.alphas_cumprod) == 1000
    assert load_sd_folder(v_dir).scheduler.config.prediction_type == "v_prediction"
    # diffusers' own pipeline reads the same folder.
    pipe = StableDiffusionPipeline.from_pretrained(str(eps_dir), local_files_only=True)
    assert_close(pipe.unet.conv_in.weight, parts.unet.conv_in.weight)


def test_same_seed_same_weights_and_no_global_rng_change(tmp_path):
    before = torch.random.get_rng_state()
    a = load_sd_folder(write_tiny_sd_folder(tmp_path / "a"), text_encoder=False)
    b = load_sd_folder(write_tiny_sd_folder(tmp_path / "b", seed=1), text_encoder=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    c = load_sd_folder(write_tiny_sd_folder(tmp_path / "c"), text_encoder=False)
    assert torch.equal(a.unet.conv_in.weight, c.unet.conv_in.weight)
    assert not torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)


def test_missing_parts_give_clear_errors(eps_dir, tmp_path):
    folder = tmp_path / "sd"
    shutil.copytree(eps_dir, folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(
        FileNotFoundError, match=r"lacks vae/; expected .*model_index.json \+ unet/, vae/"
    ):
        load_sd_folder(folder)
    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(FileNotFoundError, match="lacks vae/, text_encoder/"):
        load_sd_folder(folder)
    (folder / "model_index.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no model_index\.json"):
        load_sd_folder(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sd_folder(tmp_path / "nowhere")


def test_text_encoder_is_optional(eps_dir, tmp_path):
    folder = tmp_path / "sd"
    shutil.copytree(eps_dir, folder, ignore=shutil.ignore_patterns("text_encoder"))
    with pytest.raises(FileNotFoundError, match="pass text_encoder=False"):
        load_sd_folder(folder)
    parts = load_sd_folder(folder, text_encoder=False)
    assert parts.text_encoder is None and parts.tokenizer is None


def test_sd21_configs_build_the_real_sizes():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    # Meta tensors: the architecture without allocating 3.8 GB.
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd21_unet_config())
        vae = AutoencoderKL(**sd21_vae_config())
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # SD 2.1 UNet
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # SD VAE


# ---------------------------------------------------------------------------------------------
# Latent space and prompts


def test_latent_space_round_trip_shapes(eps_dir):
    vae = load_sd_folder(eps_dir, text_encoder=False).vae
    space = LatentSpace(vae)
    assert (space.factor, space.channels) == (8, 4)
    img = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        z = space.encode(img)
        assert z.shape == (2, 4, 4, 5)
        # Deterministic: the posterior mode, scaled by the VAE's scaling_factor.
        expected = vae.encode(2 * img - 1).latent_dist.mean * vae.config.scaling_factor
        assert_close(z, expected)
        assert_close(space.encode(img), z)
        x = space.decode(z)
        assert x.shape == img.shape
        assert_close(x, (vae.decode(z / vae.config.scaling_factor).sample + 1) / 2)
    with pytest.raises(ValueError, match="multiple of the VAE factor 8"):
        space.encode(torch.rand(1, 3, 30, 32))


def test_prompt_encoder_empty_vs_text(eps_dir):
    parts = load_sd_folder(eps_dir)
    prompts = PromptEncoder(parts.text_encoder, parts.tokenizer)
    emb = prompts(["", "a cat on a mat"])
    assert emb.shape == (2, 16, parts.text_encoder.config.hidden_size)
    assert not emb.requires_grad
    assert not torch.allclose(emb[0], emb[1])
    assert_close(prompts([""])[0], emb[0])
    assert prompts.empty() is prompts.empty()  # cached
    # Without a text encoder only the empty prompt works, and only if its embedding is given.
    bare = PromptEncoder(empty=prompts.empty())
    assert_close(bare(["", ""]), emb[:1].expand(2, -1, -1))
    with pytest.raises(ValueError, match="'a cat' needs a text encoder"):
        bare(["a cat"])
    with pytest.raises(ValueError, match="neither a text encoder nor a cached"):
        PromptEncoder()([""])
    with pytest.raises(ValueError, match="list of prompts"):
        prompts("a cat")  # pyright: ignore[reportArgumentType]


# ---------------------------------------------------------------------------------------------
# Student


def test_only_lora_trains_and_frozen_weights_stay_bit_identical(eps_dir):
    resolver = _resolver(eps_dir, prompt="a cat")
    student = resolver.student
    trainable = resolver.trainable_parameters()
    named = dict(resolver.named_parameters())
    lora_names = {n for n, p in named.items() if any(p is q for q in trainable)}
    assert lora_names and all("lora_" in n for n in lora_names)
    assert {n for n, p in named.items() if p.requires_grad} == lora_names
    # LoRA on the VAE encoder (and quant_conv), never on the decoder; and on the UNet.
    assert any(n.startswith("student.space.vae.encoder.") for n in lora_names)
    assert any(".quant_conv.lora_" in n for n in lora_names)
    assert not any(".decoder." in n or "post_quant_conv" in n for n in lora_names)
    assert any(n.startswith("student.denoiser.net.") for n in lora_names)

    frozen = {n: p.detach().clone() for n, p in named.items() if n not in lora_names}
    lora_before = {n: named[n].detach().clone() for n in lora_names}
    text_encoder = snapshot_params(resolver.prompts)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    for _ in range(2):  # LoRA B starts at 0, so A only gets a gradient from the second step
        loss = (resolver(torch.rand(2, 3, 8, 8)) - 0.5).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for n, before in frozen.items():
        assert torch.equal(named[n], before), n
        assert named[n].grad is None, n
    assert_params_unchanged(resolver.prompts, text_encoder)
    changed = {n for n in lora_names if not torch.equal(named[n], lora_before[n])}
    assert changed == lora_names
    assert student.timestep == 999


def test_lora_ranks_and_targets_are_arguments(eps_dir):
    parts = load_sd_folder(eps_dir, text_encoder=False)
    student = SDOneStepStudent(parts, unet_rank=2, vae_rank=1, unet_targets=["to_q"])
    unet_lora = {n: p for n, p in student.unet.named_parameters() if "lora_A" in n}
    assert unet_lora and all(".to_q.lora_A" in n for n in unet_lora)
    assert all(p.shape[0] == 2 for p in unet_lora.values())
    vae_lora = [p for n, p in student.vae.named_parameters() if "lora_A" in n]
    assert vae_lora and all(p.shape[0] == 1 for p in vae_lora)
    with pytest.raises(ValueError, match="timestep must lie in"):
        SDOneStepStudent(load_sd_folder(eps_dir, text_encoder=False), timestep=1000)


def test_resolver_shape_range_and_multiple(eps_dir):
    resolver = _resolver(eps_dir)
    assert resolver.scale == 4
    assert resolver.multiple == 4  # VAE factor 8 x 2 (one UNet downsampling) / x4
    with torch.no_grad():
        sr = resolver(torch.rand(3, 3, 8, 12))
    assert sr.shape == (3, 3, 32, 48)
    assert float(sr.min()) >= 0.0 and float(sr.max()) <= 1.0
    with pytest.raises(ValueError, match="not a multiple of 4"):
        resolver(torch.rand(1, 3, 8, 10))
    with pytest.raises(ValueError, match="needs a text encoder"):
        SDSuperResolver(resolver.student, PromptEncoder(empty=torch.zeros(1, 2, 3)), prompt="x")


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_one_step_is_the_x0_formula(kind, eps_dir, v_dir):
    parts = load_sd_folder(eps_dir if kind == "epsilon" else v_dir)
    student = SDOneStepStudent(parts)
    _perturb_lora(student)  # the formula must hold for the adapted UNet, the one that is called
    z_L = torch.randn(2, 4, 4, 4)
    emb = PromptEncoder(parts.text_encoder, parts.tokenizer)(["a", "b c"])
    with torch.no_grad():
        out = parts.unet(z_L, 999, encoder_hidden_states=emb).sample
        z_H = student(z_L, emb)
    abar = parts.scheduler.alphas_cumprod[999].to(torch.float32)
    if kind == "epsilon":  # OSEDiff: (z_L - sqrt(1 - abar_T) eps) / sqrt(abar_T)
        expected = (z_L - (1 - abar).sqrt() * out) / abar.sqrt()
    else:  # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  x0 = sqrt(abar) z - sqrt(1 - abar) v
        expected = abar.sqrt() * z_L - (1 - abar).sqrt() * out
    assert_close(z_H, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(z_H, z_L, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# Export


def test_export_reload_gives_the_same_output(eps_dir, tmp_path):
    resolver = _resolver(eps_dir, prompt="a red cat")
    _perturb_lora(resolver)
    lr = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected = resolver(lr)
        base = _resolver(eps_dir, prompt="a red cat")(lr)
    assert not torch.allclose(expected, base, atol=1e-3)  # the adapters matter

    out = export_sd_student(resolver, tmp_path / "export")
    assert has_lora(resolver.student.unet)  # the resolver keeps its adapters
    meta = json.loads((out / "onestep_sr.json").read_text())
    assert {k: meta[k] for k in ("scale", "timestep", "prompt")} == {
        "scale": 4,
        "timestep": 999,
        "prompt": "a red cat",
    }
    loaded = load_sd_student(out)
    assert not has_lora(loaded.student.unet) and not has_lora(loaded.student.vae)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert (loaded.scale, loaded.prompt, loaded.multiple) == (4, "a red cat", 4)
    with torch.no_grad():
        assert_close(loaded(lr), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(FileExistsError, match="not empty"):
        export_sd_student(resolver, out)


def test_export_without_text_encoder_keeps_the_empty_prompt(eps_dir, tmp_path):
    parts = load_sd_folder(eps_dir)
    empty = PromptEncoder(parts.text_encoder, parts.tokenizer).empty()
    bare = SDParts(parts.unet, parts.vae, parts.scheduler)
    resolver = SDSuperResolver(SDOneStepStudent(bare), PromptEncoder(empty=empty))
    _perturb_lora(resolver)
    lr = torch.rand(1, 3, 8, 8)
    out = export_sd_student(resolver, tmp_path / "export")
    assert not (out / "text_encoder").exists()
    loaded = load_sd_student(out)
    assert not loaded.prompts.has_text_encoder
    with torch.no_grad():
        assert_close(loaded(lr), resolver(lr), rtol=1e-4, atol=1e-4)


def test_load_sd_student_needs_the_metadata(eps_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no onestep_sr.json.*export_sd_student"):
        load_sd_student(eps_dir)
    folder = tmp_path / "sd"
    shutil.copytree(eps_dir, folder)
    (folder / "onestep_sr.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="format 'other'"):
        load_sd_student(folder)


def test_lora_step_changes_the_output(eps_dir):
    """A LoRA-only student still learns: one step on a target moves the output towards it."""
    resolver = _resolver(eps_dir)
    snapshot = snapshot_params(resolver.student.unet, buffers=False)
    lr = torch.rand(1, 3, 8, 8)
    target = torch.full((1, 3, 32, 32), 0.5)
    optimizer = torch.optim.Adam(resolver.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = (resolver.student.space.decode(resolver.hr_latent(lr)) - target).square().mean()
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0]
    assert_params_changed(resolver.student.unet, snapshot)
