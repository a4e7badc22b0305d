"""Offline data: WikiText-2 rows as Hugging Face builds them, calibration text, HellaSwag parsing."""
from __future__ import annotations

import bz2

import pytest

from experiments import data
from experiments.errors import GbdError

WIKI_TEST_SHA256 = "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"


@pytest.fixture(scope="module")
def wiki():
    return data.wikitext2_test()


def test_hf_rows_match_the_dataset_script():
    assert data.hf_rows(" \n = Title = \n \nBody line\n") == ["", " = Title = \n", "", "Body line\n"]
    assert data.hf_rows("a\r\nb") == ["a\r\n", "b"]  # "\r\n" -> "\n" happens when the file is read
    assert data.hf_rows("a\u2028b\n") == ["a\u2028b\n"]  # only '\n' ends a row, unlike str.splitlines


def test_wikitext2_test_rows_and_joined_text(wiki):
    assert wiki.sha256 == WIKI_TEST_SHA256 and wiki.path.endswith("wiki.test.raw")
    with open(wiki.path, encoding="utf-8") as f:
        rows = data.hf_rows(f.read())
    assert len(rows) == 4358 and rows[:2] == ["", " = Robert Boulter = \n"]  # the file opens with ' \n'
    assert sum(r == "" for r in rows) == 1467 and all(r == "" or r.endswith(" \n") for r in rows)
    assert wiki.text == "\n\n".join(rows) and wiki.text.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert")
    assert len(wiki.text) == 1_294_336


def test_calibration_text_is_not_the_test_split(wiki):
    calib = data.calibration_text()
    assert calib.path.endswith("valid.txt") and "valid" in calib.name
    assert calib.text.startswith("\n\n = Homarus gammarus = \n") and "<unk>" in calib.text
    assert " = Robert Boulter = " not in calib.text
    test_lines = [r for r in wiki.text.split("\n") if len(r) > 80][:50]
    assert not any(line in calib.text for line in test_lines)


def test_calibration_text_from_env_file(tmp_path, monkeypatch):
    (tmp_path / "calib.txt").write_text(" \n line one \n", encoding="utf-8")
    monkeypatch.setenv("GBD_CALIB_TEXT", str(tmp_path / "calib.txt"))
    calib = data.calibration_text()
    assert calib.text == "\n\n line one \n" and calib.sha256 == data.sha256(tmp_path / "calib.txt")


def test_hellaswag_full_file_parses():
    items = data.hellaswag_items()
    assert len(items) == 10_042
    assert all(len(it.endings) == 4 and it.label in range(4) for it in items)
    assert {it.label for it in items} == {0, 1, 2, 3}
    first = items[0]
    assert (first.activity_label, first.ctx, first.label) == ("Roof shingle removal",
                                                              "A man is sitting on a roof. he", 3)
    assert first.endings[3] == "starts pulling up roofing on a roof."
    path, digest = data.hellaswag_source()
    assert path.name == "hellaswag_val_full.txt.bz2" and digest == data.sha256(path)


def test_hellaswag_limit_and_first_separator(tmp_path):
    lines = ["Act: ctx with: colon", "1", "a", "b", "c", "d"] * 3
    path = tmp_path / "hs.txt.bz2"
    path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    items = data.hellaswag_items(path, limit=2)
    assert len(items) == 2 and items[0].activity_label == "Act" and items[0].ctx == "ctx with: colon"
    assert items[0].endings == ["a", "b", "c", "d"] and items[0].label == 1


@pytest.mark.parametrize("lines, message", [
    (["Act: ctx", "1", "a", "b", "c"], "multiple of 6"),
    (["Act: ctx", "4", "a", "b", "c", "d"], "gold label"),
    (["no separator", "0", "a", "b", "c", "d"], "separator"),
    (["Act: ctx", "0", "a", "", "c", "d"], "ending is empty"),
])
def test_malformed_hellaswag_is_a_clear_error(tmp_path, lines, message):
    path = tmp_path / "hs.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(GbdError, match=message):
        data.hellaswag_items(path)


def test_missing_files_are_clear_errors(tmp_path):
    for load in (data.wikitext2_test, data.calibration_text, data.hellaswag_items):
        with pytest.raises(GbdError, match="not found"):
            load(str(tmp_path / "missing.txt"))


def test_data_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("GBD_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    with pytest.raises(GbdError, match="not found"):
        data.wikitext2_test()
    monkeypatch.setenv("GBD_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(GbdError, match="GBD_DATA_DIR"):
        data.data_dir()


def test_truncated_or_corrupt_hellaswag_bz2_is_a_clear_error(tmp_path):
    lines = ["Act: ctx", "1", "a", "b", "c", "d"] * 50
    whole = bz2.compress(("\n".join(lines) + "\n").encode())
    truncated, garbage = tmp_path / "truncated.txt.bz2", tmp_path / "garbage.txt.bz2"
    truncated.write_bytes(whole[: len(whole) // 2])
    garbage.write_bytes(b"BZh9" + bytes(range(256)) * 4)
    for path in (truncated, garbage):
        with pytest.raises(GbdError, match="cannot be read.*truncated or corrupt"):
            data.hellaswag_items(path)


def test_the_shared_data_files_match_their_sha256sums(wiki):
    assert data.checksum_status(wiki.path, wiki.sha256) == "matches SHA256SUMS"
    path, digest = data.hellaswag_source()
    assert data.checksum_status(path, digest) == "matches SHA256SUMS"
    assert data.checksum_status(wiki.path, "0" * 64).startswith("MISMATCH: SHA256SUMS lists 173c87a5")


def test_checksum_status_in_a_data_folder_of_our_own(tmp_path, monkeypatch):
    monkeypatch.setenv("GBD_DATA_DIR", str(tmp_path))
    (tmp_path / "sub").mkdir()
    good, bad, unlisted = tmp_path / "sub" / "good.txt", tmp_path / "bad.txt", tmp_path / "new.txt"
    for f in (good, bad, unlisted):
        f.write_text(f.name)
    assert data.checksum_status(good, data.sha256(good)) == "no SHA256SUMS"
    (tmp_path / "SHA256SUMS").write_text(f"{data.sha256(good)}  ./sub/good.txt\n{'0' * 64}  bad.txt\n")
    assert data.checksum_status(good, data.sha256(good)) == "matches SHA256SUMS"
    assert data.checksum_status(bad, data.sha256(bad)) == f"MISMATCH: SHA256SUMS lists {'0' * 64}"
    assert data.checksum_status(unlisted, data.sha256(unlisted)) == "not listed in SHA256SUMS"
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("x")
    assert data.checksum_status(outside, data.sha256(outside)) == "outside the data folder"
    assert data.display_path(good) == "sub/good.txt" and data.display_path(outside) == outside.name
