"""The onestep-rl command line: version, help, and honest refusal of verbs not built yet."""

from importlib.metadata import version

from onestep.rl.cli import PLANNED, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == version("onestep-rl")


def test_help_lists_what_exists_and_what_is_planned(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "available now" in out and "not yet built" in out


def test_planned_verb_refuses_with_status_2(capsys):
    assert main(["demo"]) == 2
    assert PLANNED in capsys.readouterr().err


def test_unknown_verb(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown verb" in capsys.readouterr().err
