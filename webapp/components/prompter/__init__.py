"""The point/box prompter: a Gradio 6 component built on `gr.HTML`, shipped as plain files."""

from webapp.components.prompter.component import PointBoxPrompter

__all__ = ["PointBoxPrompter"]
