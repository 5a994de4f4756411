"""The onestep-3d command line: version, help, and honest refusal of verbs not built yet."""

from onestep.core.testing import check_domain_cli
from onestep.threed.cli import PLANNED, main


def test_cli(capsys):
    check_domain_cli(main, "onestep-3d", PLANNED, capsys)
