"""Layout and event wiring, one module per area of the page.

Each module has ``build(c)`` (create components, register them in the name → component
dict ``c``) and ``wire(c, web)`` (attach events once every component exists). Handlers
return ``{name: value}``; `named` turns that into Gradio's ``{component: value}``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

# Outputs a whole-session screen update may touch (see webapp.handlers.screen).
SCREEN = (
    "view",
    "drawn",
    "sketches",
    "prompter",
    "editor",
    "regions_md",
    "image_info",
    "chat",
    "turn_pick",
    "status",
    "banner",
    "fork_btn",
    "ask_btn",
    "question",
    "overlay",
    "legend",
    "badge",
    "routing",
    "downloads",
)


def named(c: dict[str, Any], values: dict[str, Any]) -> dict[Any, Any]:
    """``{name: value}`` → ``{component: value}``; Gradio reads an empty dict as one value."""
    if not values:
        raise ValueError("a handler must update at least one output (use gr.update())")
    return {c[name]: value for name, value in values.items()}


def outs(
    c: dict[str, Any], *groups: tuple[str, ...] | list[str] | str
) -> list[gr.components.Component]:
    names: list[str] = []
    for group in groups:
        for name in [group] if isinstance(group, str) else group:
            if name not in names:
                names.append(name)
    return [c[name] for name in names]
