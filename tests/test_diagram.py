"""diagrams/ is generated from the machine; this fails when the committed file drifts."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cloudshare_p2p.cli import main
from statemachine import TABLE, State
from statemachine.diagram import mermaid

COMMITTED = Path(__file__).resolve().parent.parent / "diagrams" / "state-machine.mmd"


def test_committed_diagram_matches_the_machine():
    assert COMMITTED.read_text() == mermaid(), (
        "diagrams/state-machine.mmd is out of date: run `make diagram` and commit it"
    )


def test_diagram_shows_every_state_and_event():
    text = mermaid()
    for state in State:
        assert f'state "{state.value}" as {state.value}' in text
    for row in TABLE:
        assert row.event.value in text


def test_cli_prints_the_committed_diagram():
    result = CliRunner().invoke(main, ["diagram"])
    assert result.exit_code == 0
    assert result.output == COMMITTED.read_text()


def test_readme_embeds_the_diagram():
    readme = (COMMITTED.parent.parent / "README.md").read_text()
    assert "```mermaid\n" + mermaid() + "```" in readme
