"""The ``onestep-audio`` command line.

No verb is built yet: each planned verb says where it is tracked and exits with status 2, so
nothing pretends to work.
"""

from onestep.core.cli import domain_cli

PLANNED = "planned: ARCHITECTURE.md section 3"

main = domain_cli(
    "onestep-audio",
    "one-step speech and music (CoMoSpeech, DITTO-2)",
    verbs={},
    planned={
        "fit": PLANNED,
        "validate": PLANNED,
        "test": PLANNED,
        "predict": PLANNED,
        "speak": PLANNED,
        "demo": PLANNED,
        "bench": PLANNED,
    },
)
