"""Custom Gradio components that ship with the web app (no build step: plain HTML/CSS/JS)."""
