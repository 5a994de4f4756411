"""OSEDiff on a (tiny, random) Stable Diffusion folder: trains LoRA only and exports."""

import copy

import lightning as L
import torch
from torch.utils.data import DataLoader

from onestep.sr.data import bicubic_downsample
from onestep.sr.sd import SDSuperResolver, load_sd_student, write_tiny_sd_folder
from onestep.sr.sd.export import export_sd_student
from onestep.sr.sd.osediff import osediff_from_sd_folder


def test_osediff_on_a_tiny_sd_folder_trains_lora_only_and_exports(tmp_path):
    folder = write_tiny_sd_folder(tmp_path / "sd")
    module = osediff_from_sd_folder(folder, prompt="", guidance_scale=2.0, lr_student=1e-3)
    frozen0 = {n: p.clone() for n, p in module.student.named_parameters() if not p.requires_grad}
    trainable0 = {n: p.clone() for n, p in module.student.named_parameters() if p.requires_grad}
    assert trainable0 and all("lora_" in n for n in trainable0)
    assert any("encoder" in n for n in trainable0)  # the VAE encoder's LoRA trains too
    teacher0 = copy.deepcopy(module.teacher.state_dict())
    hr = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    data = [{"hr": hr[i], "lr": bicubic_downsample(hr[i], 4)} for i in range(4)]
    L.Trainer(
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    ).fit(module, DataLoader(data, batch_size=2))  # pyright: ignore[reportArgumentType]
    params = dict(module.student.named_parameters())
    assert all(torch.equal(frozen0[n], params[n]) for n in frozen0)
    assert any(not torch.equal(trainable0[n], params[n]) for n in trainable0)
    assert all(torch.equal(teacher0[k], v) for k, v in module.teacher.state_dict().items())
    resolver = module.resolver().eval()
    lr = bicubic_downsample(hr[:1], 4)
    out = resolver(lr)
    assert out.shape == (1, 3, 32, 32)
    assert isinstance(resolver, SDSuperResolver)
    export_sd_student(resolver, tmp_path / "student")
    back = load_sd_student(tmp_path / "student")
    torch.testing.assert_close(back(lr), out, atol=1e-4, rtol=1e-4)
