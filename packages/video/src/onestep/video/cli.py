"""The ``onestep-video`` command line.

No verb is built yet: each planned verb says where it is tracked and exits with status 2, so
nothing pretends to work.
"""

from onestep.core.cli import domain_cli

PLANNED = "planned: ARCHITECTURE.md section 3"

main = domain_cli(
    "onestep-video",
    "causal few-step video generation (self-distillation, diagonal distillation, sparse attention)",
    verbs={},
    planned={
        "fit": PLANNED,
        "validate": PLANNED,
        "test": PLANNED,
        "predict": PLANNED,
        "stream": PLANNED,
        "demo": PLANNED,
        "bench": PLANNED,
    },
)
