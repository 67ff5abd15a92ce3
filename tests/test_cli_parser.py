"""The ``keras-trpo`` argument parser built from one function per command (issue 25, item 6): the options that
every command shares come from argparse ``parents=``, not from a patched ``add_parser``."""

from __future__ import annotations

import pytest

from keras_trpo import cli

COMMANDS = {
    "train": ["train", "CartPole-v1"],
    "evaluate": ["evaluate", "RUN", "CartPole-v1"],
    "export": ["export", "model.keras", "out"],
    "plot": ["plot", "RUN", "-o", "curve.png"],
    "info": ["info", "RUN"],
    "presets": ["presets"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_debug_after_its_name_without_listing_it(command, capsys):
    """Bug caught: a command built without the shared hidden --debug (``keras-trpo train ... --debug`` then fails
    with "unrecognized arguments"), or with it listed in the command's --help."""
    parser = cli.build_parser()
    argv = COMMANDS[command]
    assert parser.parse_args(argv).debug is False
    assert parser.parse_args([*argv, "--debug"]).debug is True
    assert parser.parse_args(["--debug", *argv]).debug is True
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: keras-trpo {command} ") and "--debug" not in help_text
