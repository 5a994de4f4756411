"""The ``onestep-rl`` command line.

No verb is built yet: each planned verb says where it is tracked and exits with status 2, so
nothing pretends to work.
"""

from onestep.core.cli import domain_cli

PLANNED = "planned in issue #6"

main = domain_cli(
    "onestep-rl",
    "one-step flow policies for offline RL (OFQL, FQL, DQL baseline)",
    verbs={},
    planned={
        "fit": PLANNED,
        "evaluate": PLANNED,
        "collect": PLANNED,
        "demo": PLANNED,
        "bench": PLANNED,
    },
)
