"""The README's Python examples run as written (those that need no downloaded weights)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    """The Python code blocks of a README section (up to the next heading of its level)."""
    marker = f"\n{section}\n"
    text = README.read_text()
    assert marker in text, f"README has no section {section!r}"
    level = section.split(" ", 1)[0]
    body = text.split(marker, 1)[1].split(f"\n{level} ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_core_and_reconstruction_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    core = python_blocks("## The MAE core in Python")
    assert core, "the section should hold a Python example"
    namespace: dict = {}
    exec(compile(core[0], str(README), "exec"), namespace)
    assert namespace["features"].shape == (8, 192)
    assert namespace["loss"].ndim == 0 and namespace["mask"].shape == (8, 64)
    (figure,) = python_blocks("### Reconstruction figures")
    images = namespace["images"]
    exec(compile(figure, str(README), "exec"), {"model": namespace["model"], "images": images})
    assert (tmp_path / "recon.png").stat().st_size > 1000
