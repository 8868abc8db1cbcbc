"""The ``jaxstars`` command: sub-commands are wired (the quickstart itself is tested in test_quickstart.py)."""

import pytest

from jaxstars.cli import main


def test_quickstart_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["quickstart", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--seed", "--n-train", "--n-stars", "--epochs", "--quick", "--no-progress"):
        assert option in text
    assert "quickstart-out" in text


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "quickstart" in capsys.readouterr().out
