"""Every Python block of the README runs as written, on a tiny model where the block names a model folder."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments.methods import registry

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
MODEL_FOLDERS = ("path/to/hf-model-dir", "smollm2-v1-dense")     # the model folders the blocks name


def test_the_readme_has_its_python_examples():
    assert len(BLOCKS) >= 3
    assert all(any(folder in block for block in BLOCKS) for folder in MODEL_FOLDERS)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny, tiny_neox) -> str:
    return save_tiny(tiny_neox(2048), tmp_path_factory.mktemp("tiny"), True)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_python_block_runs(index, tiny_dir, tmp_path, monkeypatch):
    block = BLOCKS[index]
    for folder in MODEL_FOLDERS:
        block = block.replace(f'"{folder}"', repr(tiny_dir))
    monkeypatch.chdir(tmp_path)                                       # what a block writes lands here
    for table in ("METHODS", "BIAS_DEFAULTS", "LAZY"):               # a block's register_method stays in this test
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": f"readme_block_{index}"})
