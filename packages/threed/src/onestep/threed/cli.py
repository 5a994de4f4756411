"""The ``onestep-3d`` command line.

No verb is built yet: each planned verb says where it is tracked and exits with status 2, so
nothing pretends to work.
"""

from onestep.core.cli import domain_cli

PLANNED = "planned: ARCHITECTURE.md section 3"

main = domain_cli(
    "onestep-3d",
    "one-step 3-D generation (Consistent3D, VideoScene)",
    verbs={},
    planned={
        "fit": PLANNED,
        "validate": PLANNED,
        "test": PLANNED,
        "predict": PLANNED,
        "export": PLANNED,
        "demo": PLANNED,
        "bench": PLANNED,
    },
)
