"""diffusers adapters: tiny pipelines saved to tmp folders, loaded back as Denoisers, exported."""

import copy
import json
from pathlib import Path

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    EDMEulerScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DModel,
    UniPCMultistepScheduler,
    WanTransformer3DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from onestep.core.adapters import (
    FluxDenoiser,
    SD3Denoiser,
    UNet2DConditionDenoiser,
    UNet2DDenoiser,
    WanDenoiser,
    from_unet2d,
    from_unet2d_condition,
    from_wan_transformer,
    load_denoiser,
    process_from_scheduler,
    save_diffusers,
)
from onestep.core.denoiser import Guided
from onestep.core.lora import add_lora, lora_parameters, merge_lora
from onestep.core.noise import Flow, VPTable
from onestep.core.testing import tiny_unet2d, tiny_unet2d_condition

N_STEPS = 50  # short scheduler tables keep the fixtures small


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only add overhead (seconds per call on a busy 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# Tiny builders (a few thousand parameters each)


def tiny_sd3() -> SD3Transformer2DModel:
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=8,
        caption_projection_dim=8,
        pooled_projection_dim=16,
        pos_embed_max_size=8,
    )


def tiny_vae(shift_factor: float | None = None) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(8,),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
        layers_per_block=1,
        shift_factor=shift_factor,
    )


VOCAB = ["<|startoftext|>", "<|endoftext|>", "a</w>", "b</w>", "c</w>", "a", "b", "c"]


def tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over a handful of tokens, written offline."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)


def tiny_clip_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(VOCAB),
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=8,
        projection_dim=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


# ---------------------------------------------------------------------------------------------
# Pipeline folders, built once per module


@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ddpm")
    scheduler = DDPMScheduler(num_train_timesteps=N_STEPS)
    DDPMPipeline(unet=tiny_unet2d(), scheduler=scheduler).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sd")
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(tiny_clip_config()),
        tokenizer=tiny_tokenizer(folder / "_tok"),
        unet=tiny_unet2d_condition(),
        scheduler=DDPMScheduler(  # pyright: ignore[reportArgumentType]
            num_train_timesteps=N_STEPS,
            beta_schedule="scaled_linear",
            prediction_type="v_prediction",
            steps_offset=1,
            clip_sample=False,
        ),
        safety_checker=None,  # pyright: ignore[reportArgumentType]
        feature_extractor=None,  # pyright: ignore[reportArgumentType]
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sd3")
    tokenizer = tiny_tokenizer(folder / "_tok")
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(shift_factor=0.0),
        text_encoder=CLIPTextModelWithProjection(tiny_clip_config()),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(tiny_clip_config()),
        tokenizer_2=tokenizer,
        text_encoder_3=None,  # pyright: ignore[reportArgumentType]
        tokenizer_3=None,  # pyright: ignore[reportArgumentType]
    )
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"


def _sd3_cond(batch: int) -> dict[str, torch.Tensor]:
    return {
        "encoder_hidden_states": torch.randn(batch, 5, 8),
        "pooled_projections": torch.randn(batch, 16),
    }


def _load_sd3(folder: Path) -> StableDiffusion3Pipeline:
    # The tiny SD3 pipeline has no T5 encoder; diffusers accepts it as explicitly absent.
    return StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)


def _perturb(net: torch.nn.Module) -> None:
    """Turn a teacher copy into a 'student' whose weights differ everywhere."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))


# ---------------------------------------------------------------------------------------------
# Schedulers


@pytest.mark.parametrize(
    ("prediction_type", "expected"), [("epsilon", "eps"), ("sample", "x0"), ("v_prediction", "v")]
)
def test_process_from_ddpm_scheduler(prediction_type, expected):
    scheduler = DDPMScheduler(num_train_timesteps=N_STEPS, prediction_type=prediction_type)
    process, prediction, scale = process_from_scheduler(scheduler)
    assert isinstance(process, VPTable)
    assert prediction == expected
    assert scale == N_STEPS - 1
    # Step k of N sits at t = k / (N - 1): alpha^2 there is the scheduler's alphas_cumprod[k].
    k = torch.tensor([0, 7, N_STEPS - 1])
    t = k.double() / (N_STEPS - 1)
    torch.testing.assert_close(
        process.alpha(t) ** 2, scheduler.alphas_cumprod[k].double(), rtol=1e-6, atol=1e-7
    )


def test_process_from_flow_schedulers():
    for scheduler in (
        FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True),
    ):
        process, prediction, scale = process_from_scheduler(scheduler)
        assert isinstance(process, Flow)
        assert (prediction, scale) == ("flow", 1000.0)


def test_process_from_scheduler_rejects_unknown_families(tmp_path):
    with pytest.raises(ValueError, match="EDMEulerScheduler"):
        process_from_scheduler(EDMEulerScheduler())
    with pytest.raises(FileNotFoundError, match=r"scheduler_config\.json"):
        process_from_scheduler(tmp_path)


# ---------------------------------------------------------------------------------------------
# UNet2DModel (DDPM pipeline)


def test_unet2d_from_pipeline_folder(ddpm_dir):
    denoiser = load_denoiser(ddpm_dir)
    assert isinstance(denoiser, UNet2DDenoiser)
    assert isinstance(denoiser.net, UNet2DModel)
    assert denoiser.prediction == "eps" and denoiser.timestep == N_STEPS - 1
    assert denoiser.pipeline_path == ddpm_dir

    x = torch.randn(2, 3, 8, 8)
    k = torch.tensor([5, 31])
    t = k.float() / (N_STEPS - 1)
    with torch.no_grad():
        eps = denoiser.net(x, k.float()).sample
        raw = denoiser.raw(x, t)
        x0 = denoiser(x, t)
    torch.testing.assert_close(raw, eps)
    # Hand-computed DDPM conversion at integer steps: x0 = (x - sqrt(1 - a_k) eps) / sqrt(a_k).
    a_k = DDPMScheduler(num_train_timesteps=N_STEPS).alphas_cumprod[k].view(-1, 1, 1, 1)
    torch.testing.assert_close(x0, (x - (1 - a_k).sqrt() * eps) / a_k.sqrt(), rtol=1e-4, atol=1e-5)


def test_unet2d_layouts_and_errors(ddpm_dir, tmp_path):
    # A model folder inside a pipeline finds its sibling scheduler.
    assert load_denoiser(ddpm_dir / "unet").timestep == N_STEPS - 1
    assert isinstance(load_denoiser(ddpm_dir, subfolder="unet"), UNet2DDenoiser)
    # A bare model folder needs an explicit scheduler or process.
    bare = tmp_path / "bare"
    UNet2DModel.from_pretrained(ddpm_dir / "unet").save_pretrained(bare)
    with pytest.raises(ValueError, match="no scheduler found"):
        load_denoiser(bare)
    with_scheduler = load_denoiser(bare, scheduler=ddpm_dir / "scheduler")
    assert with_scheduler.pipeline_path is None and with_scheduler.prediction == "eps"
    wide = load_denoiser(bare, scheduler=ddpm_dir / "scheduler", dtype=torch.float64)
    assert next(wide.net.parameters()).dtype == torch.float64
    x64 = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert wide(x64, torch.tensor([0.5], dtype=torch.float64)).dtype == torch.float64
    explicit = from_unet2d(bare, process=VPTable([0.9, 0.5, 0.1]), prediction="sample")
    assert explicit.timestep == 2.0 and explicit.prediction == "x0"
    # Missing folders are named, hub ids are never fetched.
    with pytest.raises(FileNotFoundError, match="org/not-a-folder"):
        load_denoiser("org/not-a-folder")
    with pytest.raises(ValueError, match="holds a UNet2DModel, not a UNet2DConditionModel"):
        from_unet2d_condition(ddpm_dir)
    with pytest.raises(TypeError, match="wraps a UNet2DModel"):
        from_unet2d(tiny_unet2d_condition(), DDPMScheduler())


def test_unet2d_export_roundtrip_through_ddpm_pipeline(ddpm_dir, tmp_path):
    teacher = load_denoiser(ddpm_dir)
    student = copy.deepcopy(teacher)
    _perturb(student.net)
    out = save_diffusers(student, tmp_path / "student")
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    pipe = DDPMPipeline.from_pretrained(out)
    x, ts = torch.randn(2, 3, 8, 8), torch.tensor([3.0, 40.0])
    with torch.no_grad():
        got = pipe.unet(x, ts).sample
        assert torch.equal(got, student.net(x, ts).sample)
        assert not torch.equal(got, teacher.net(x, ts).sample)
    assert pipe.scheduler.config.num_train_timesteps == N_STEPS


def test_unet2d_export_with_ddim_scheduler_and_lora_guard(ddpm_dir, tmp_path):
    student = load_denoiser(ddpm_dir)
    add_lora(student.net, rank=2)
    with pytest.raises(ValueError, match="merge_lora"):
        save_diffusers(student, tmp_path / "lora")
    with torch.no_grad():
        for p in lora_parameters(student.net):
            p.add_(0.1 * torch.randn_like(p))
    merge_lora(student.net)
    ddim = DDIMScheduler(num_train_timesteps=N_STEPS)
    out = save_diffusers(student.net, tmp_path / "ddim", scheduler=ddim)
    pipe = DDIMPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    x, ts = torch.randn(1, 3, 8, 8), torch.tensor([10.0])
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, ts).sample, student.net(x, ts).sample)
    with pytest.raises(FileExistsError, match="not empty"):
        save_diffusers(student.net, out, scheduler=ddim)


# ---------------------------------------------------------------------------------------------
# UNet2DConditionModel (Stable Diffusion layout)


def test_unet2d_condition_denoiser(sd_dir):
    denoiser = load_denoiser(sd_dir)
    assert isinstance(denoiser, UNet2DConditionDenoiser)
    assert denoiser.prediction == "v"
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8)
    k = torch.tensor([2, 45])
    t = k.float() / (N_STEPS - 1)
    with torch.no_grad():
        v = denoiser.net(x, k.float(), encoder_hidden_states=ctx).sample
        torch.testing.assert_close(denoiser.raw(x, t, ctx), v)
        torch.testing.assert_close(denoiser.raw(x, t, {"encoder_hidden_states": ctx}), v)
        x0 = denoiser(x, t, ctx)
    # v-prediction (Salimans & Ho 2022): x0 = sqrt(a_k) x - sqrt(1 - a_k) v.
    a_k = denoiser.scheduler.alphas_cumprod[k].view(-1, 1, 1, 1)
    torch.testing.assert_close(x0, a_k.sqrt() * x - (1 - a_k).sqrt() * v, rtol=1e-4, atol=1e-5)

    # Dict conds batch through classifier-free guidance.
    guided = Guided(denoiser, 3.0, {"encoder_hidden_states": torch.zeros(1, 3, 8)})
    with torch.no_grad():
        out = guided(x, t, {"encoder_hidden_states": ctx})
        x0_u = denoiser(x, t, torch.zeros(2, 3, 8))
    torch.testing.assert_close(out, x0_u + 3.0 * (x0 - x0_u), rtol=1e-4, atol=1e-5)

    with pytest.raises(ValueError, match="lacks"):
        denoiser(x, t, {"added_cond_kwargs": {}})
    with pytest.raises(ValueError, match="takes no"):
        denoiser(x, t, {"encoder_hidden_states": ctx, "pooled_projections": ctx})


def test_unet2d_condition_export_roundtrip_through_sd_pipeline(sd_dir, tmp_path):
    student = load_denoiser(sd_dir)
    _perturb(student.net)
    out = save_diffusers(student, tmp_path / "student")  # base = the teacher's folder
    pipe = StableDiffusionPipeline.from_pretrained(out)
    teacher = StableDiffusionPipeline.from_pretrained(sd_dir)
    x, ctx, ts = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8), torch.tensor([20.0])
    with torch.no_grad():
        got = pipe.unet(x, ts, encoder_hidden_states=ctx).sample
        assert torch.equal(got, student.net(x, ts, encoder_hidden_states=ctx).sample)
        assert not torch.equal(got, teacher.unet(x, ts, encoder_hidden_states=ctx).sample)
    # Everything but the UNet is the teacher's.
    for a, b in zip(pipe.text_encoder.parameters(), teacher.text_encoder.parameters(), strict=True):
        assert torch.equal(a, b)
    assert pipe.tokenizer("a b").input_ids == teacher.tokenizer("a b").input_ids


# ---------------------------------------------------------------------------------------------
# SD3 transformer (flow matching)


def test_sd3_denoiser(sd3_dir):
    denoiser = load_denoiser(sd3_dir)
    assert isinstance(denoiser, SD3Denoiser)
    assert isinstance(denoiser.process, Flow)
    assert (denoiser.prediction, denoiser.timestep) == ("flow", 1000.0)
    x, cond = torch.randn(2, 4, 8, 8), _sd3_cond(2)
    t = torch.tensor([0.25, 0.8])
    with torch.no_grad():
        u = denoiser.net(hidden_states=x, timestep=t * 1000, **cond).sample
        torch.testing.assert_close(denoiser.raw(x, t, cond), u)
        x0 = denoiser(x, t, cond)
    # Rectified flow: x_t = (1 - t) x0 + t eps and u = eps - x0, so x0 = x_t - t u.
    torch.testing.assert_close(x0, x - t.view(-1, 1, 1, 1) * u, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not a bare tensor"):
        denoiser(x, t, cond["encoder_hidden_states"])
    with pytest.raises(ValueError, match="pooled_projections"):
        denoiser(x, t, {"encoder_hidden_states": cond["encoder_hidden_states"]})


def test_sd3_export_roundtrip_through_sd3_pipeline(sd3_dir, tmp_path):
    student = load_denoiser(sd3_dir)
    _perturb(student.net)
    one_step = FlowMatchEulerDiscreteScheduler(shift=1.0)
    out = save_diffusers(student, tmp_path / "student", base_pipeline=sd3_dir, scheduler=one_step)
    pipe = _load_sd3(out)
    assert pipe.scheduler.config.shift == 1.0
    x, cond, ts = torch.randn(1, 4, 8, 8), _sd3_cond(1), torch.tensor([500.0])
    with torch.no_grad():
        got = pipe.transformer(hidden_states=x, timestep=ts, **cond).sample
        assert torch.equal(got, student.net(hidden_states=x, timestep=ts, **cond).sample)
    assert (out / "transformer" / "diffusion_pytorch_model.safetensors").is_file()


def test_export_without_base_needs_one(sd3_dir, tmp_path):
    student = load_denoiser(sd3_dir)
    with pytest.raises(ValueError, match="base_pipeline"):
        save_diffusers(student.net, tmp_path / "out")
    with pytest.raises(ValueError, match="base pipeline itself"):
        save_diffusers(student, sd3_dir)


def test_exported_sd_pipeline_generates(sd_dir, tmp_path):
    student = load_denoiser(sd_dir)
    out = save_diffusers(student, tmp_path / "student")
    pipe = StableDiffusionPipeline.from_pretrained(out)
    images = pipe("a b", num_inference_steps=1, height=8, width=8, output_type="pt")[0]
    assert isinstance(images, torch.Tensor)
    assert images.shape == (1, 3, 8, 8) and torch.isfinite(images).all()


# ---------------------------------------------------------------------------------------------
# Wan transformer (flow matching video, [B, C, F, H, W])


def test_wan_denoiser_from_bare_folder(tmp_path):
    torch.manual_seed(0)
    net = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        out_channels=4,
        text_dim=8,
        freq_dim=8,
        ffn_dim=16,
        num_layers=1,
        rope_max_seq_len=32,
    )
    net.save_pretrained(tmp_path / "transformer")
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True)
    scheduler.save_pretrained(tmp_path / "scheduler")  # sibling folder, no model_index.json

    denoiser = load_denoiser(tmp_path / "transformer")
    assert isinstance(denoiser, WanDenoiser) and isinstance(denoiser.process, Flow)
    x, ctx, t = torch.randn(1, 4, 2, 4, 4), torch.randn(1, 3, 8), torch.tensor([0.6])
    with torch.no_grad():
        u = denoiser.net(hidden_states=x, timestep=t * 1000, encoder_hidden_states=ctx).sample
        torch.testing.assert_close(denoiser.raw(x, t, ctx), u)
        torch.testing.assert_close(denoiser(x, t, ctx), x - 0.6 * u, rtol=1e-4, atol=1e-5)
    assert from_wan_transformer(net, scheduler).timestep == 1000.0


# ---------------------------------------------------------------------------------------------
# Flux transformer (flow matching on packed 2x2 latent patches)


def test_flux_denoiser_packs_like_the_pipeline(tmp_path):
    torch.manual_seed(0)
    net = FluxTransformer2DModel(
        in_channels=16,  # 4 latent channels x 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=8,
        pooled_projection_dim=16,
        guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    )
    net.save_pretrained(tmp_path / "transformer")
    FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).save_pretrained(
        tmp_path / "scheduler"
    )
    denoiser = load_denoiser(tmp_path / "transformer")
    assert isinstance(denoiser, FluxDenoiser) and isinstance(denoiser.process, Flow)
    assert (denoiser.prediction, denoiser.timestep) == ("flow", 1.0)  # Flux takes sigma itself

    x, t = torch.randn(2, 4, 4, 6), torch.tensor([0.3, 0.9])
    cond = {
        "encoder_hidden_states": torch.randn(2, 3, 8),
        "pooled_projections": torch.randn(2, 16),
        "guidance": torch.full((2,), 3.5),
    }
    # Reference: the pipeline's own packing helpers and ids, called as FluxPipeline calls it.
    packed = FluxPipeline._pack_latents(x, 2, 4, 4, 6)
    ids = FluxPipeline._prepare_latent_image_ids(2, 2, 3, x.device, x.dtype)
    with torch.no_grad():
        u_packed = net(
            hidden_states=packed, timestep=t, img_ids=ids, txt_ids=torch.zeros(3, 3), **cond
        ).sample
        u = FluxPipeline._unpack_latents(u_packed, 4 * 8, 6 * 8, vae_scale_factor=8)
        torch.testing.assert_close(denoiser.raw(x, t, cond), u)
        torch.testing.assert_close(
            denoiser(x, t, cond), x - t.view(-1, 1, 1, 1) * u, rtol=1e-4, atol=1e-5
        )
    with pytest.raises(ValueError, match="even latent height and width"):
        denoiser(torch.randn(2, 4, 5, 6), t, cond)
