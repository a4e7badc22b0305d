"""The evaluation and calibration data ship inside the package: the files exist, match their own SHA256SUMS, are
declared as package data, and are the default data folder where no GBD_DATA_DIR and no checkout data exist."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

from experiments import data
from experiments.errors import GbdError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (data.WIKITEXT_TEST, data.WIKITEXT_VALID_TOKENIZED, data.HELLASWAG_VAL)


def test_the_packaged_files_exist_and_match_their_sha256sums():
    sums = data.read_checksums(data.PACKAGED_DATA)
    assert sums is not None and set(sums) == set(SHIPPED)
    for name, digest in sums.items():
        assert data.sha256(data.PACKAGED_DATA / name) == digest, name
    assert (data.PACKAGED_DATA / "PROVENANCE.md").is_file()


def test_pyproject_declares_every_packaged_file_as_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["experiments"]
    folder = data.PACKAGED_DATA.relative_to(ROOT / "experiments")
    for name in (*SHIPPED, data.CHECKSUMS, "PROVENANCE.md"):
        assert any(fnmatch.fnmatch((folder / name).as_posix(), g) for g in globs), name


@pytest.fixture
def no_checkout_data(monkeypatch, tmp_path):
    """As in an installed package: no GBD_DATA_DIR, no shared/data beside the code."""
    monkeypatch.delenv("GBD_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "CHECKOUT_DATA", tmp_path / "absent")


def test_without_gbd_data_dir_nor_checkout_data_the_default_is_the_packaged_folder(no_checkout_data):
    assert data.data_dir() == data.PACKAGED_DATA
    wiki = data.wikitext2_test()
    assert data.display_path(wiki.path) == data.WIKITEXT_TEST
    assert data.checksum_status(wiki.path, wiki.sha256) == "matches SHA256SUMS"
    assert len(data.hellaswag_items()) == data.HELLASWAG_VAL_ITEMS
    assert "<unk>" in data.calibration_text().text


def test_gbd_data_dir_overrides_the_packaged_folder(no_checkout_data, monkeypatch, tmp_path):
    monkeypatch.setenv("GBD_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.setenv("GBD_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(GbdError, match="GBD_DATA_DIR .* does not exist"):
        data.data_dir()


def test_checkout_data_when_present_is_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv("GBD_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "CHECKOUT_DATA", tmp_path)
    assert data.data_dir() == tmp_path
