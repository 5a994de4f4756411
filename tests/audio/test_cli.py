"""The onestep-audio command line: version, help, and honest refusal of verbs not built yet."""

from onestep.audio.cli import PLANNED, main
from onestep.core.testing import check_domain_cli


def test_cli(capsys):
    check_domain_cli(main, "onestep-audio", PLANNED, capsys)
