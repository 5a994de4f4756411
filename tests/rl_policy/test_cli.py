"""The onestep-rl command line: version, help, and honest refusal of verbs not built yet."""

from onestep.core.testing import check_domain_cli
from onestep.rl.cli import PLANNED, main


def test_cli(capsys):
    check_domain_cli(main, "onestep-rl", PLANNED, capsys)
