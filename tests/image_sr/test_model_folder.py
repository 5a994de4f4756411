"""Model folders: save -> load gives the same outputs for every kind; bad folders fail clearly."""

import json
import shutil
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from onestep.core.denoiser import Denoiser
from onestep.core.lora import add_lora, has_lora
from onestep.core.noise import flow
from onestep.sr.methods.osediff import OSEDiffVSD
from onestep.sr.model_folder import load_resolver, read_model_info, save_resolver
from onestep.sr.models.loading import load_teacher_denoiser
from onestep.sr.models.resolvers import SamplerResolver, StudentResolver
from onestep.sr.models.student import OneStepStudent
from onestep.sr.models.teacher import SRTeacher, build_denoiser
from onestep.sr.models.unet import tiny_unet
from onestep.sr.sd import SDSuperResolver, load_sd_folder, write_tiny_sd_folder
from onestep.sr.sd.latent import latent_space_from_folder
from onestep.sr.space import PixelSpace

LR = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(1))


def _net(seed=0):
    net = tiny_unet(widths=(8, 16), groups=4, seed=seed)
    with torch.no_grad():  # not the identity: the zero output layer would hide wrong weights
        torch.nn.init.normal_(net.unet.conv_out.weight, std=0.05)
    return net


def _student_resolver(**student_kwargs):
    student = OneStepStudent(build_denoiser(_net()), **student_kwargs)
    return StudentResolver(student, PixelSpace(), scale=4, multiple=1).eval()


def _meta(folder):
    return json.loads((folder / "onestep_sr.json").read_text())


def test_pixel_student_round_trip(tmp_path):
    resolver = _student_resolver(t_start=0.9)
    folder = save_resolver(resolver, tmp_path / "student")
    meta = _meta(folder)
    assert (meta["kind"], meta["space"], meta["process"], meta["t_start"]) == (
        "student",
        "pixel",
        "flow",
        0.9,
    )
    loaded = load_resolver(folder)
    assert isinstance(loaded, StudentResolver) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert (loaded.scale, loaded.multiple) == (4, 1)
    with torch.no_grad():
        assert_close(loaded(LR), resolver(LR))
    # Different weights give a different output: the comparison above can fail.
    other = StudentResolver(OneStepStudent(build_denoiser(_net(seed=5))), PixelSpace(), 4)
    with torch.no_grad():
        assert not torch.allclose(other(LR), resolver(LR), atol=1e-4)


def test_teacher_sampler_round_trip_and_teacher_loader(tmp_path):
    teacher = SRTeacher(net=_net(), scale=4, process="vp").eval()
    resolver = teacher.resolver(3, solver="heun", seed=7)
    folder = save_resolver(resolver, tmp_path / "teacher")
    meta = _meta(folder)
    assert {k: meta[k] for k in ("kind", "steps", "solver", "seed", "process")} == {
        "kind": "teacher",
        "steps": 3,
        "solver": "heun",
        "seed": 7,
        "process": "vp",
    }
    loaded = load_resolver(folder)
    assert isinstance(loaded, SamplerResolver)
    assert_close(loaded(LR), resolver(LR))

    # The same folder is a teacher for distillation configs; its process is checked.
    denoiser = load_teacher_denoiser(str(folder), process="vp")
    x_t, t = torch.randn(2, 3, 32, 48), torch.full((2,), 0.4)
    z_lr = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert_close(denoiser(x_t, t, z_lr), teacher.ema_denoiser(x_t, t, z_lr))
    with pytest.raises(ValueError, match="process='vp'"):
        load_teacher_denoiser(str(folder), process="flow")
    with pytest.raises(FileNotFoundError, match="save_teacher"):
        load_teacher_denoiser(str(tmp_path / "missing"))


def test_a_module_is_saved_through_its_resolver(tmp_path):
    teacher = build_denoiser(_net()).requires_grad_(False).eval()
    module = OSEDiffVSD(teacher=teacher, perceptual="none").eval()
    folder = save_resolver(module, tmp_path / "osediff")
    assert _meta(folder)["kind"] == "student"
    with torch.no_grad():
        assert_close(load_resolver(folder)(LR), module.resolver()(LR))
    with pytest.raises(TypeError, match=r"resolver needs steps"):
        save_resolver(SRTeacher(net=_net()), tmp_path / "teacher")


def test_lora_student_is_saved_merged(tmp_path):
    net = _net()
    resolver = StudentResolver(OneStepStudent(build_denoiser(net)), PixelSpace(), 4).eval()
    add_lora(net.unet, rank=2, target_modules=["conv1", "conv2"])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_" in name:
                p.add_(0.1 * torch.randn_like(p))
    loaded = load_resolver(save_resolver(resolver, tmp_path / "lora"))
    assert has_lora(net)  # the trained module keeps its adapters
    assert not has_lora(loaded)
    with torch.no_grad():
        assert_close(loaded(LR), resolver(LR), rtol=1e-4, atol=1e-5)


def test_other_resolvers_are_pickled(tmp_path):
    # An eps-predicting denoiser is not what build_denoiser makes: saved as a whole module.
    denoiser = Denoiser(_net(), flow(), prediction="eps", timestep=1000.0)
    resolver = StudentResolver(OneStepStudent(denoiser, t_start=0.5), PixelSpace(), 4).eval()
    folder = save_resolver(resolver, tmp_path / "module")
    meta = _meta(folder)
    assert meta["kind"] == "module"
    assert meta["class"] == "onestep.sr.models.resolvers.StudentResolver"
    with torch.no_grad():
        assert_close(load_resolver(folder)(LR), resolver(LR))


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return write_tiny_sd_folder(tmp_path_factory.mktemp("sd") / "sd")


def test_latent_student_round_trip(sd, tmp_path):
    space = latent_space_from_folder(str(sd))
    net = tiny_unet(channels=4, widths=(8, 16), groups=4)
    with torch.no_grad():
        torch.nn.init.normal_(net.unet.conv_out.weight, std=0.05)
    resolver = StudentResolver(OneStepStudent(build_denoiser(net)), space, 4, multiple=4).eval()
    folder = save_resolver(resolver, tmp_path / "latent")
    assert _meta(folder)["space"] == "latent" and (folder / "vae" / "config.json").is_file()
    loaded = load_resolver(folder)
    assert loaded.multiple == 4
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert_close(loaded(lr), resolver(lr))
    with pytest.raises(FileNotFoundError, match="no AutoencoderKL"):
        latent_space_from_folder(str(tmp_path))


def test_sd_student_round_trip(sd, tmp_path):
    resolver = SDSuperResolver.from_parts(load_sd_folder(sd), scale=4).eval()
    with torch.no_grad():
        for name, p in resolver.named_parameters():
            if "lora_" in name:
                p.add_(0.2 * torch.randn_like(p))
    folder = save_resolver(resolver, tmp_path / "student")
    assert read_model_info(folder)["format"] == "onestep-sr/sd-one-step"
    loaded = load_resolver(folder)
    assert isinstance(loaded, SDSuperResolver)
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert_close(loaded(lr), resolver(lr), rtol=1e-4, atol=1e-4)


def test_saving_again_replaces_a_model_folder_but_not_other_folders(tmp_path):
    folder = save_resolver(_student_resolver(), tmp_path / "m")
    save_resolver(_student_resolver(t_start=0.5), folder)
    assert _meta(folder)["t_start"] == 0.5
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a saved model"):
        save_resolver(_student_resolver(), tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_bad_folders_fail_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*save_resolver"):
        load_resolver(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no onestep_sr\.json"):
        load_resolver(tmp_path / "empty")

    folder = save_resolver(_student_resolver(), tmp_path / "m")
    meta = _meta(folder)
    cases = {
        "kind 'diffusion-policy'": {**meta, "kind": "diffusion-policy"},
        "version 2.*upgrade onestep-sr": {**meta, "version": 2},
        "format 'other'": {**meta, "format": "other"},
        r"lacks \['t_start'\]": {k: v for k, v in meta.items() if k != "t_start"},
    }
    for message, bad in cases.items():
        broken = tmp_path / "broken"
        shutil.copytree(folder, broken, dirs_exist_ok=True)
        (broken / "onestep_sr.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            load_resolver(broken)


def test_a_ctmsr_student_is_saved_as_network_plus_settings_not_pickled(tmp_path):
    from onestep.sr.methods.ctmsr import CTMSR

    module = CTMSR(net=tiny_unet(widths=(8, 16), groups=4), sigma_max=0.7, noise_seed=3)
    net: Any = module.ema.net
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.05)  # a non-trivial output
    folder = save_resolver(module, tmp_path / "ctmsr")
    meta = json.loads((folder / "onestep_sr.json").read_text())
    assert meta["kind"] == "ctmsr" and meta["ctmsr"]["process"]["sigma_max"] == 0.7
    assert not (folder / "resolver.pt").exists()
    with torch.no_grad():
        assert_close(load_resolver(folder)(LR), module.resolver()(LR))
