"""Check built wheels as PyPI would see them: one module each, no onestep/__init__.py anywhere.

Usage: python tools/check_wheels.py DIST_DIR
"""

import sys
import zipfile
from pathlib import Path

EXPECTED = {
    "onestep_core": "onestep/core/",
    "onestep_sr": "onestep/sr/",
    "onestep_video": "onestep/video/",
    "onestep_audio": "onestep/audio/",
    "onestep_3d": "onestep/threed/",
    "onestep_rl": "onestep/rl/",
}


def check(dist_dir: Path) -> list[str]:
    problems = []
    wheels = {w.name.split("-")[0]: w for w in dist_dir.glob("*.whl")}
    for dist, prefix in EXPECTED.items():
        wheel = wheels.get(dist)
        if wheel is None:
            problems.append(f"no wheel for {dist} in {dist_dir}")
            continue
        names = zipfile.ZipFile(wheel).namelist()
        if "onestep/__init__.py" in names:
            problems.append(f"{wheel.name} ships onestep/__init__.py (onestep is a namespace)")
        if f"{prefix}__init__.py" not in names:
            problems.append(f"{wheel.name} lacks {prefix}__init__.py")
        shipped = {n.split("/")[1] for n in names if n.startswith("onestep/") and n != "onestep/"}
        foreign = shipped - {prefix.split("/")[1]}
        if foreign:
            problems.append(f"{wheel.name} ships other onestep modules: {sorted(foreign)}")
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = zipfile.ZipFile(wheel).read(meta).decode()
        if dist != "onestep_core" and "Requires-Dist: onestep-core" not in requires:
            problems.append(f"{wheel.name} does not declare onestep-core as a dependency")
    return problems


if __name__ == "__main__":
    problems = check(Path(sys.argv[1]))
    for p in problems:
        print("wheel check:", p)
    print("wheel check:", "FAILED" if problems else f"{len(EXPECTED)} wheels OK")
    sys.exit(1 if problems else 0)
