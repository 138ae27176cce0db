"""Every command has help with an example; the exit codes are documented in --help and README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cloudshare_p2p.cli import EXIT_MEANINGS, main
from cloudshare_p2p.errors import ExitCode


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


COMMANDS = list(all_commands(main))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, command):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert (command.help or "").strip(), f"`cloudshare {' '.join(path)}` has no help"
    if not isinstance(command, click.Group):
        assert "Example" in result.output or "example" in (command.help or "").lower()


def test_exit_codes_are_in_help_and_readme():
    result = CliRunner().invoke(main, ["--help"])
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for code in ExitCode:
        assert f"  {code.value}  {EXIT_MEANINGS[code]}" in result.output
        assert f"| {code.value} |" in readme


def test_usage_error_exits_2():
    result = CliRunner().invoke(main, ["open"])
    assert result.exit_code == 2
