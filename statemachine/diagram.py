"""The state diagram, drawn by `transitions` from the very table the machine runs on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transitions.extensions import GraphMachine

from .machine import _Model, machine_spec
from .states import State

TITLE = "cloudshare data set"


class _GraphModel(_Model):
    if TYPE_CHECKING:  # `GraphMachine` adds this to the model when it is built
        def get_graph(self, title: str | None = None, force_new: bool = False) -> Any: ...


def mermaid() -> str:
    """Mermaid `stateDiagram-v2` text of the machine (what `diagrams/` holds)."""
    model = _GraphModel(context=None)  # type: ignore[arg-type]
    GraphMachine(
        model=model,
        initial=State.UNSHARED.value,
        graph_engine="mermaid",
        title=TITLE,
        show_conditions=True,
        **machine_spec(),
    )
    text = model.get_graph().draw(None)
    # transitions writes "Class x y"; Mermaid's keyword is lower-case "class".
    lines = [line.replace("  Class ", "  class ", 1) for line in text.splitlines()]
    return "\n".join(line.rstrip() for line in lines) + "\n"
