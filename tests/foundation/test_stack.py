"""The supported stack: what is pinned is what is installed, and what Spaces is told."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            found[name.strip().lower().replace("_", "-")] = version.strip()
    return found


def test_supported_majors_are_pinned_and_installed():
    pinned = pins()
    assert Version(pinned["gradio"]).major == 6
    assert Version(pinned["gradio-client"]).major == 2
    assert Version(pinned["huggingface-hub"]).major >= 1
    assert Version(pinned["transformers"]).major == 5
    assert Version(pinned["pydantic"]) >= Version("2.11")
    for name in ("gradio", "gradio-client", "huggingface-hub", "transformers", "fastapi"):
        assert importlib.metadata.version(name) == pinned[name], name


def test_the_unmaintained_prompter_package_is_gone():
    assert "gradio-image-prompter" not in pins()
    assert "gradio_image_prompter" not in (ROOT / "pyproject.toml").read_text()
    assert importlib.util.find_spec("gradio_image_prompter") is None


def test_spaces_front_matter_names_the_pinned_gradio():
    front = (ROOT / "README.md").read_text().split("---")[1]
    match = re.search(r"^sdk_version:\s*(\S+)$", front, re.MULTILINE)
    assert match and match.group(1) == pins()["gradio"]
