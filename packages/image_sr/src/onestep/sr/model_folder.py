"""One folder format for trained super-resolvers: ``onestep-sr upscale --model DIR`` reads it.

:func:`save_resolver` writes a resolver (or a LightningModule's ``resolver()``) and
:func:`load_resolver` reads it back as a ready :class:`~onestep.sr.resolver.SuperResolver`.
Every folder has ``onestep_sr.json``; what else depends on the kind::

    student  one-step student (StudentResolver > OneStepStudent > Denoiser > ConditionalUNet)
             {"format": "onestep-sr/model", "version": 1, "kind": "student", "scale": 4,
              "multiple": 1, "space": "pixel", "process": "flow", "t_start": 1.0,
              "lr_conditioned": true}
             + the ConditionalUNet (its ``save``: config.json, weights, settings) in the folder
             + ``vae/`` (diffusers AutoencoderKL) when ``space`` is "latent"
    teacher  the SR teacher's N-step sampler (SamplerResolver > Denoiser > ConditionalUNet)
             as a student, with "kind": "teacher", "steps", "solver", "seed"
    ctmsr    a CTMSR consistency student (StudentResolver > CTMSRStudent > ConditionalUNet):
             the network as above + "ctmsr": its process and scalings, and the noise seed
    module   any other resolver: the whole module pickled
             with ``torch.save`` as ``resolver.pt`` ("class" names its type); it loads only with
             the same code, and loading unpickles: open only folders you trust
    SD       a Stable Diffusion one-step student: the diffusers folder of
             :func:`onestep.sr.sd.export_sd_student`, whose json has
             "format": "onestep-sr/sd-one-step" (read with :func:`onestep.sr.sd.load_sd_student`)

A LoRA-adapted student network is saved merged (no peft needed to run it).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from onestep.core.denoiser import Denoiser
from onestep.sr.evaluation import required_parameters
from onestep.sr.models.resolvers import SamplerResolver, StudentResolver
from onestep.sr.models.student import OneStepStudent
from onestep.sr.models.teacher import build_denoiser
from onestep.sr.models.unet import ConditionalUNet
from onestep.sr.resolver import SuperResolver
from onestep.sr.space import PixelSpace, Space

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "META_NAME",
    "SaveModelFolder",
    "as_resolver",
    "load_resolver",
    "read_model_info",
    "save_resolver",
]

META_NAME = "onestep_sr.json"
FORMAT = "onestep-sr/model"
FORMAT_VERSION = 1
KINDS: tuple[str, ...] = ("student", "teacher", "ctmsr", "module")
PROCESSES: tuple[str, ...] = ("flow", "vp")  # SRTeacher's processes (build_denoiser)
PICKLE_NAME = "resolver.pt"
VAE_DIR = "vae"
_HOW_TO_SAVE = (
    "write one with onestep.sr.model_folder.save_resolver(module.resolver(), DIR), or run "
    "`onestep-sr demo`, which saves its student to <output>/student"
)


def as_resolver(obj: Any) -> SuperResolver:
    """``obj`` if it is a :class:`SuperResolver`, else ``obj.resolver()`` (a trained module).

    Raises:
        TypeError: neither, or a ``resolver`` that needs arguments (the teacher's ``steps``).
    """
    if isinstance(obj, SuperResolver):
        return obj
    make = getattr(obj, "resolver", None)
    if not callable(make):
        raise TypeError(
            f"cannot save a {type(obj).__name__}: pass a SuperResolver or a module with a "
            "resolver() method"
        )
    required = required_parameters(make)
    if required:
        raise TypeError(
            f"{type(obj).__name__}.resolver needs {', '.join(required)}; save "
            f"module.resolver({', '.join(required)}=...) instead of the module"
        )
    resolver = make()
    if not isinstance(resolver, SuperResolver):
        raise TypeError(f"{type(obj).__name__}.resolver() returned a {type(resolver).__name__}")
    return resolver


def _process_name(denoiser: Denoiser) -> str | None:
    """``flow`` / ``vp`` if ``denoiser.process`` is what ``build_denoiser`` makes for it."""
    for name in PROCESSES:
        ref = build_denoiser(nn.Identity(), name).process
        if type(denoiser.process) is type(ref) and vars(denoiser.process) == vars(ref):
            return name
    return None


def _structured(denoiser: Any, space: Space) -> dict[str, Any] | None:
    """Metadata of a ``build_denoiser(ConditionalUNet)`` in a pixel / VAE space, else ``None``."""
    from onestep.sr.sd.latent import LatentSpace

    if not (
        isinstance(denoiser, Denoiser)
        and isinstance(denoiser.net, ConditionalUNet)
        and denoiser.prediction == "x0"
        and denoiser.timestep == 1000.0
    ):
        return None
    process = _process_name(denoiser)
    if process is None:
        return None
    if type(space) is PixelSpace:
        return {"space": "pixel", "process": process}
    if type(space) is LatentSpace:
        return {"space": "latent", "process": process}
    return None


def _space_name(space: Space) -> str | None:
    from onestep.sr.sd.latent import LatentSpace

    return {PixelSpace: "pixel", LatentSpace: "latent"}.get(type(space))  # pyright: ignore[reportArgumentType]


def _is_ctmsr(student: Any, space: Space) -> bool:
    from onestep.sr.methods.ctmsr import CTMSRStudent

    return (
        isinstance(student, CTMSRStudent)
        and isinstance(student.net, ConditionalUNet)
        and _space_name(space) is not None
    )


def _ctmsr(student: Any) -> dict[str, Any]:
    """A CTMSR student's settings: its process, scalings and noise seed."""
    p = student.process
    return {
        "process": {
            "sigma_max": p.sigma_max,
            "sigma_min": p.sigma_min,
            "rho_noise": p.rho_noise,
            "rho_shift": p.rho_shift,
        },
        "sigma_data": student.sigma_data,
        "sigma_scale": student.sigma_scale,
        "time_scale": student.time_scale,
        "seed": student.seed,
    }


def _load_ctmsr(root: Path, meta: dict[str, Any]) -> SuperResolver:
    from onestep.sr.methods.ctmsr import CTMSRStudent
    from onestep.sr.objectives.ctmsr import CTMSRProcess

    settings = dict(meta["ctmsr"])
    process = CTMSRProcess(**settings.pop("process"))
    student = CTMSRStudent(ConditionalUNet.load(root), process, **settings)
    space = _load_space(root, meta)
    return StudentResolver(student, space, int(meta["scale"]), int(meta.get("multiple", 1)))


def _save_net(net: ConditionalUNet, space: Space, root: Path) -> None:
    from onestep.core.lora import has_lora, merge_lora  # peft: imported only when saving

    if has_lora(net):
        net = copy.deepcopy(net)
        merge_lora(net)  # in place: the trained module keeps its adapters
    net.save(root)
    vae = getattr(space, "vae", None)
    if vae is not None:
        vae.save_pretrained(str(root / VAE_DIR))


def _prepare(root: Path) -> None:
    """Make ``root`` an empty folder; a previous model folder there is replaced."""
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"{root} is a file; save the model into a folder")
        if any(root.iterdir()):
            if not (root / META_NAME).is_file():
                raise FileExistsError(
                    f"{root} is not empty and not a saved model (no {META_NAME}); save into a "
                    "new or empty folder"
                )
            shutil.rmtree(root)  # an earlier save of a model: overwrite it
    root.mkdir(parents=True, exist_ok=True)


def save_resolver(resolver_or_module: Any, path: str | Path) -> Path:
    """Write a trained super-resolver as a model folder (see the module docstring).

    Args:
        resolver_or_module: a :class:`SuperResolver` (a ``StudentResolver``, a teacher's
            ``SamplerResolver``, an ``SDSuperResolver``, any other) or a LightningModule whose
            ``resolver()`` takes no argument.
        path: a new or empty folder, or an earlier model folder (replaced).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TypeError: ``resolver_or_module`` is not a resolver and has no usable ``resolver()``.
        FileExistsError: ``path`` is a file, or a non-empty folder that is not a model folder.
    """
    from onestep.sr.sd.export import export_sd_student
    from onestep.sr.sd.student import SDSuperResolver

    resolver = as_resolver(resolver_or_module)
    root = Path(path)
    _prepare(root)
    if isinstance(resolver, SDSuperResolver):
        root.rmdir()  # export_sd_student wants a new or empty folder
        return export_sd_student(resolver, root)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "scale": int(resolver.scale),
        "multiple": int(resolver.multiple),
    }
    student = getattr(resolver, "student", None)
    if isinstance(resolver, StudentResolver) and isinstance(student, OneStepStudent):
        found = _structured(student.denoiser, resolver.space)
        if found is not None:
            _save_net(student.denoiser.net, resolver.space, root)  # pyright: ignore[reportArgumentType]
            meta |= {"kind": "student", **found}
            meta |= {"t_start": student.t_start, "lr_conditioned": student.lr_conditioned}
    elif isinstance(resolver, StudentResolver) and _is_ctmsr(student, resolver.space):
        _save_net(student.net, resolver.space, root)  # pyright: ignore[reportOptionalMemberAccess]
        meta |= {"kind": "ctmsr", "space": _space_name(resolver.space), "ctmsr": _ctmsr(student)}
    elif isinstance(resolver, SamplerResolver):
        found = _structured(resolver.denoiser, resolver.space)
        if found is not None:
            _save_net(resolver.denoiser.net, resolver.space, root)  # pyright: ignore[reportArgumentType]
            meta |= {"kind": "teacher", **found}
            meta |= {"steps": resolver.steps, "solver": resolver.solver, "seed": resolver.seed}
    if "kind" not in meta:
        torch.save(resolver, root / PICKLE_NAME)
        meta |= {
            "kind": "module",
            "class": f"{type(resolver).__module__}.{type(resolver).__name__}",
        }
    (root / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return root


def read_model_info(path: str | Path) -> dict[str, Any]:
    """The ``onestep_sr.json`` of a model folder (either format), checked.

    Raises:
        FileNotFoundError: no folder, or no ``onestep_sr.json`` in it.
        ValueError: an unknown format or kind, a newer version, or a missing entry.
    """
    from onestep.sr.sd.export import FORMAT as SD_FORMAT
    from onestep.sr.sd.export import FORMAT_VERSION as SD_VERSION

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder {str(root)!r} does not exist; {_HOW_TO_SAVE}")
    meta_file = root / META_NAME
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{root} has no {META_NAME}, so it is not a saved model; {_HOW_TO_SAVE}"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_file} is not valid JSON ({err}); save the model again") from err
    known = {FORMAT: FORMAT_VERSION, SD_FORMAT: SD_VERSION}
    fmt, ver = meta.get("format"), meta.get("version")
    if fmt not in known:
        raise ValueError(f"{meta_file} has format {fmt!r}; this onestep-sr reads {sorted(known)}")
    if not isinstance(ver, int) or ver > known[fmt]:
        raise ValueError(
            f"{meta_file} is {fmt!r} version {ver!r}; this onestep-sr reads up to version "
            f"{known[fmt]}: upgrade onestep-sr"
        )
    if fmt == FORMAT and meta.get("kind") not in KINDS:
        raise ValueError(
            f"{meta_file} has kind {meta.get('kind')!r}; this onestep-sr reads {list(KINDS)}: "
            "upgrade onestep-sr"
        )
    needed = {
        "student": ["space", "process", "t_start", "lr_conditioned"],
        "ctmsr": ["space", "ctmsr"],
        "module": [],
    }
    needed["teacher"] = ["space", "process", "steps", "solver", "seed"]
    missing = [k for k in ["scale", *needed.get(meta.get("kind", ""), [])] if k not in meta]
    if missing:
        raise ValueError(f"{meta_file} lacks {missing}; save the model again with save_resolver")
    return meta


def _load_space(root: Path, meta: dict[str, Any]) -> Space:
    if meta["space"] == "pixel":
        return PixelSpace()
    if meta["space"] == "latent":
        from onestep.sr.sd.latent import latent_space_from_folder

        return latent_space_from_folder(str(root / VAE_DIR))
    raise ValueError(f"{root / META_NAME}: unknown space {meta['space']!r}; use pixel or latent")


def load_resolver(path: str | Path, device: str | torch.device = "cpu") -> SuperResolver:
    """Load a model folder written by :func:`save_resolver` (or ``export_sd_student``).

    Args:
        path: the folder.
        device: where the weights go (``"cpu"``, ``"cuda"``, ...).

    Returns:
        The resolver in eval mode with every weight frozen.

    Raises:
        FileNotFoundError: no folder, no ``onestep_sr.json``, or missing weights.
        ValueError: an unknown format or kind, or a newer format version.
    """
    from onestep.sr.sd.export import FORMAT as SD_FORMAT
    from onestep.sr.sd.export import load_sd_student

    root = Path(path)
    meta = read_model_info(root)
    resolver: nn.Module
    if meta["format"] == SD_FORMAT:
        resolver = load_sd_student(root, device)
    elif meta["kind"] == "module":
        file = root / PICKLE_NAME
        if not file.is_file():
            raise FileNotFoundError(f"{root} lacks {PICKLE_NAME}; save the model again")
        resolver = torch.load(file, map_location=device, weights_only=False)
    elif meta["kind"] == "ctmsr":
        resolver = _load_ctmsr(root, meta)
    else:
        denoiser = build_denoiser(ConditionalUNet.load(root), meta["process"])
        space = _load_space(root, meta)
        scale, multiple = int(meta["scale"]), int(meta.get("multiple", 1))
        if meta["kind"] == "student":
            student = OneStepStudent(denoiser, meta["t_start"], meta["lr_conditioned"])
            resolver = StudentResolver(student, space, scale, multiple)
        else:
            resolver = SamplerResolver(
                denoiser, space, scale, meta["steps"], meta["solver"], meta["seed"], multiple
            )
    if not isinstance(resolver, SuperResolver):
        raise TypeError(f"{root / PICKLE_NAME} holds a {type(resolver).__name__}, not a resolver")
    return resolver.to(device).eval().requires_grad_(False)


class SaveModelFolder(L.Callback):
    """Save the trained module's resolver as a model folder when ``fit`` ends (rank zero).

    For configs::

        trainer:
          callbacks:
            - class_path: onestep.sr.model_folder.SaveModelFolder
              init_args: {path: runs/sr_teacher/tiny, steps: 4}

    Args:
        path: the folder (relative to the working directory); replaced if it holds an earlier
            save.
        steps: sampler steps for a module whose ``resolver`` needs them (the teacher);
            ``None`` for one-step students.
    """

    def __init__(self, path: str, steps: int | None = None) -> None:
        super().__init__()
        self.path, self.steps = path, steps

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the folder."""
        if not trainer.is_global_zero:
            return
        make = getattr(pl_module, "resolver", None)
        if self.steps is not None and callable(make):
            save_resolver(make(self.steps), self.path)
        else:
            save_resolver(pl_module, self.path)
