"""The house rules of ARCHITECTURE.md §1, checked on the source tree and the installed packages."""

import ast
import importlib
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> (distribution, import name)
MEMBERS = {
    "core": ("onestep-core", "core"),
    "image_sr": ("onestep-sr", "sr"),
    "video": ("onestep-video", "video"),
    "audio": ("onestep-audio", "audio"),
    "threed": ("onestep-3d", "threed"),
    "rl_policy": ("onestep-rl", "rl"),
}
DOMAINS = {name for _, name in MEMBERS.values()} - {"core"}


def test_every_member_is_in_the_workspace():
    folders = {p.parent.name for p in (ROOT / "packages").glob("*/pyproject.toml")}
    assert folders == set(MEMBERS)


@pytest.mark.parametrize("folder", sorted(MEMBERS))
def test_no_member_ships_onestep_init(folder):
    src = ROOT / "packages" / folder / "src"
    assert not (src / "onestep" / "__init__.py").exists()
    assert (src / "onestep" / MEMBERS[folder][1] / "__init__.py").exists()


def test_onestep_is_a_namespace_spanning_all_members():
    onestep = importlib.import_module("onestep")
    assert onestep.__file__ is None, "onestep must be a PEP 420 namespace package"
    for folder, (_, name) in MEMBERS.items():
        module = importlib.import_module(f"onestep.{name}")
        assert module.__file__ is not None
        assert Path(module.__file__).is_relative_to(ROOT / "packages" / folder / "src")


@pytest.mark.parametrize("folder", sorted(MEMBERS))
def test_version_comes_from_metadata(folder):
    dist, name = MEMBERS[folder]
    assert importlib.import_module(f"onestep.{name}").__version__ == version(dist)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _onestep_subpackages(path: Path) -> set[str]:
    return {
        m.split(".")[1] for m in _imported_modules(path) if m.startswith("onestep.") and "." in m
    }


@pytest.mark.parametrize("folder", sorted(MEMBERS))
def test_dependency_rule(folder):
    """Domain packages import core only; core imports no domain package."""
    own = MEMBERS[folder][1]
    allowed = {"core", own}
    bad = []
    for path in sorted((ROOT / "packages" / folder / "src").rglob("*.py")):
        for sub in _onestep_subpackages(path) - allowed:
            if sub in DOMAINS:
                bad.append(f"{path.relative_to(ROOT)} imports onestep.{sub}")
    assert not bad, "\n".join(bad)


def test_dependency_rule_catches_a_sibling_import(tmp_path):
    """The checker above must see `from onestep.video import x` and `import onestep.rl.agents`."""
    f = tmp_path / "m.py"
    f.write_text(
        "from onestep.video import x\nimport onestep.rl.agents\nfrom onestep.core import y\n"
    )
    assert _onestep_subpackages(f) == {"video", "rl", "core"}
