"""The ``onestep-sr`` command line.

No verb is built yet: each planned verb says where it is tracked and exits with status 2, so
nothing pretends to work.
"""

from onestep.core.cli import domain_cli

PLANNED = "planned in issue #5"

main = domain_cli(
    "onestep-sr",
    "one-step image super-resolution (OSEDiff-style VSD, CTMSR, TAD-SR)",
    verbs={},
    planned={
        "fit": PLANNED,
        "validate": PLANNED,
        "test": PLANNED,
        "predict": PLANNED,
        "upscale": PLANNED,
        "demo": PLANNED,
        "bench": PLANNED,
    },
)
