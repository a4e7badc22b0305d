"""Offline evaluation and calibration data, shipped in the package (experiments/data_files/PROVENANCE.md).

- WikiText-2 raw test: Hugging Face ``wikitext-2-raw-v1`` rows rebuilt from ``wiki.test.raw`` exactly as the
  dataset script read the file (one row per line, line ending kept, blank lines -> ''), then joined with
  "\\n\\n" (the SVD-LLM perplexity protocol).
- Calibration: a text file (``$GBD_CALIB_TEXT``), else the local *tokenized* WikiText-2 valid split
  (``<unk>`` tokens; the train split is not shipped), never the test split. Online, ``--calibration
  wikitext2-train`` (``$GBD_CALIBRATION``) is the paper's: the wikitext-2-raw-v1 train split through ``datasets``,
  rows joined with "\\n\\n", windows drawn as SVD-LLM draws them (``experiments.model.moments.svd_llm_batch``).
- HellaSwag validation: 6 lines per item (activity_label + ": " + ctx, gold label, 4 endings).
"""
from __future__ import annotations

import bz2
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from experiments.errors import GbdError

WIKITEXT_TEST = "wikitext-2-raw/wiki.test.raw"
WIKITEXT_VALID_TOKENIZED = "wikitext-2-tokens-pytorch-examples/valid.txt"
HELLASWAG_VAL = "hellaswag/hellaswag_val_full.txt.bz2"
HELLASWAG_VAL_ITEMS = 10_042
LINES_PER_ITEM = 6
CHECKSUMS = "SHA256SUMS"
CALIBRATION_SOURCES = ("local", "wikitext2-train")     # $GBD_CALIBRATION, set by --calibration
HELLASWAG_SOURCES = ("local", "lm-eval")               # $GBD_HELLASWAG, set by --hellaswag
WIKITEXT_REPO, WIKITEXT_CONFIG = "Salesforce/wikitext", "wikitext-2-raw-v1"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
PACKAGED_DATA = Path(__file__).resolve().parent / "data_files"     # the three files above, their SHA256SUMS
CHECKOUT_DATA = PACKAGE_ROOT.parent / "shared" / "data"              # beside a source checkout: also the test data


@dataclass
class TextSource:
    """A text, what it is, and the file it came from with its sha256."""

    text: str
    name: str
    path: str
    sha256: str
    windows: str = "token-offsets"   # how calibration draws its windows (experiments.model.moments.calibration_windows)


@dataclass
class HellaSwagItem:
    """One HellaSwag item; ``label`` indexes the gold ending."""

    activity_label: str
    ctx: str
    endings: list[str]
    label: int


def data_dir() -> Path:
    """``$GBD_DATA_DIR``; else ``shared/data`` beside a source checkout when it exists (the same three files, with
    the test data such as the Pythia tokenizer); else the data shipped in the package (``PACKAGED_DATA``), so an
    installed package finds its data from any working directory."""
    env = os.environ.get("GBD_DATA_DIR")
    if not env:
        return CHECKOUT_DATA if CHECKOUT_DATA.is_dir() else PACKAGED_DATA
    path = Path(env)
    if not path.is_dir():
        raise GbdError(f"GBD_DATA_DIR {path} does not exist: set it to the folder holding wikitext-2-raw/, "
                       "wikitext-2-tokens-pytorch-examples/ and hellaswag/, or unset it to use the packaged data")
    return path


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def display_path(path: str | Path) -> str:
    """A path as reports print it, never absolute: relative to the data folder, else to the package root,
    else only the file name."""
    path = Path(path).resolve()
    roots = [PACKAGE_ROOT]
    try:
        roots.insert(0, data_dir().resolve())
    except GbdError:   # no data folder: only the package root
        pass
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def read_checksums(folder: Path) -> dict[str, str] | None:
    """{path relative to ``folder``: sha256} from ``folder/SHA256SUMS`` (sha256sum format), or None if absent."""
    listing = folder / CHECKSUMS
    if not listing.is_file():
        return None
    sums = {}
    for line in listing.read_text(encoding="utf-8").splitlines():
        digest, sep, name = line.strip().partition("  ")
        if sep:
            sums[Path(name.lstrip("*")).as_posix().removeprefix("./")] = digest.lower()
    return sums


def checksum_status(path: str | Path, digest: str) -> str:
    """'matches SHA256SUMS', 'MISMATCH: SHA256SUMS lists <sha>', 'not listed in SHA256SUMS', or
    'no SHA256SUMS' for a file of the data folder (a file outside it: 'outside the data folder')."""
    try:
        folder = data_dir().resolve()
    except GbdError:
        return "outside the data folder"
    path = Path(path).resolve()
    if not path.is_relative_to(folder):
        return "outside the data folder"
    sums = read_checksums(folder)
    if sums is None:
        return f"no {CHECKSUMS}"
    expected = sums.get(path.relative_to(folder).as_posix())
    if expected is None:
        return f"not listed in {CHECKSUMS}"
    return f"matches {CHECKSUMS}" if expected == digest else f"MISMATCH: {CHECKSUMS} lists {expected}"


def hf_rows(text: str) -> list[str]:
    """Rows as the HF wikitext script made them: each line with its '\\n', whitespace-only lines -> ''."""
    return [line if line.strip() else "" for line in io.StringIO(text)]


def join_rows(rows: list[str]) -> str:
    """The evaluation text: rows joined with "\\n\\n" (SVD-LLM's ``"\\n\\n".join(data["text"])``)."""
    return "\n\n".join(rows)


def wikitext2_test(source: str | None = None) -> TextSource:
    """WikiText-2 raw test text: the data folder's file (default) or a file path."""
    path = Path(source) if source else data_dir() / WIKITEXT_TEST
    return _file_text(path, f"wikitext-2-raw-v1 test rows from {path.name}, joined with \\n\\n")


def source_choice(variable: str, choices: tuple[str, ...]) -> str:
    """The data source named by the environment ``variable`` (the first of ``choices`` when unset), checked."""
    choice = os.environ.get(variable) or choices[0]
    if choice not in choices:
        raise GbdError(f"{variable}={choice!r}: choose one of {', '.join(choices)}")
    return choice


def wikitext2_train() -> TextSource:
    """The paper's calibration text: the ``WIKITEXT_CONFIG`` train split of ``WIKITEXT_REPO`` through ``datasets``
    (needs the internet or the datasets cache), rows joined with "\\n\\n"; sha256 of the joined text."""
    import datasets

    try:
        rows = datasets.load_dataset(WIKITEXT_REPO, WIKITEXT_CONFIG, split="train")["text"]
    except Exception as exc:   # offline, hub errors, a missing config: one line naming the offline source
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise GbdError(f"--calibration wikitext2-train could not load the {WIKITEXT_CONFIG} train split of "
                       f"{WIKITEXT_REPO} through datasets ({type(exc).__name__}: {reason}); offline, use "
                       "--calibration local (the packaged tokenized WikiText-2 valid)") from exc
    text = join_rows(rows)
    return TextSource(text, f"{WIKITEXT_CONFIG} train split ({WIKITEXT_REPO} through datasets), rows joined with "
                            "\\n\\n, windows at SVD-LLM's random character offsets",
                      f"datasets:{WIKITEXT_REPO}/{WIKITEXT_CONFIG}/train", hashlib.sha256(text.encode()).hexdigest(),
                      windows="svd-llm")


def calibration_text(source: str | None = None) -> TextSource:
    """Calibration text: a file path, ``$GBD_CALIB_TEXT``, the online train split when ``$GBD_CALIBRATION`` is
    wikitext2-train, else the local tokenized valid."""
    source = source or os.environ.get("GBD_CALIB_TEXT")
    if not source and source_choice("GBD_CALIBRATION", CALIBRATION_SOURCES) == "wikitext2-train":
        return wikitext2_train()
    if source:
        return _file_text(Path(source), f"calibration rows from {Path(source).name}, joined with \\n\\n")
    return _file_text(data_dir() / WIKITEXT_VALID_TOKENIZED,
                      "WikiText-2 tokenized valid (pytorch/examples, <unk>; the train split is absent), "
                      "rows joined with \\n\\n")


def hellaswag_source(path: str | Path | None = None) -> tuple[Path, str]:
    """The HellaSwag file used and its sha256, for the report."""
    path = _existing(Path(path) if path else data_dir() / HELLASWAG_VAL)
    return path, sha256(path)


def hellaswag_items(path: str | Path | None = None, limit: int | None = None) -> list[HellaSwagItem]:
    """Parse the 6-lines-per-item HellaSwag file (.bz2 or plain); the first ``limit`` items if given."""
    expected = None if path else HELLASWAG_VAL_ITEMS
    path = _existing(Path(path) if path else data_dir() / HELLASWAG_VAL)
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:   # truncated or corrupt .bz2, unreadable file
        raise GbdError(f"{display_path(path)} cannot be read: {type(exc).__name__}: {exc} (truncated or "
                       "corrupt file?)") from exc
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or len(lines) % LINES_PER_ITEM:
        raise GbdError(f"{path}: {len(lines)} lines is not a positive multiple of {LINES_PER_ITEM} "
                       "(activity_label: ctx / label / 4 endings)")
    n_items = len(lines) // LINES_PER_ITEM
    if expected is not None and n_items != expected:
        raise GbdError(f"{path}: {n_items} items, the full validation split has {expected}")
    n_items = n_items if limit is None else min(limit, n_items)
    return [_hellaswag_item(lines[i * LINES_PER_ITEM:(i + 1) * LINES_PER_ITEM], path, i) for i in range(n_items)]


def _hellaswag_item(block: list[str], path: Path, index: int) -> HellaSwagItem:
    """One item from its 6 lines; line 1 is split on the first ': '."""
    where = f"{path}, item {index} (line {index * LINES_PER_ITEM + 1})"
    activity_label, sep, ctx = block[0].partition(": ")
    if not sep:
        raise GbdError(f"{where}: first line has no 'activity_label: ctx' separator: {block[0]!r}")
    if block[1].strip() not in ("0", "1", "2", "3"):
        raise GbdError(f"{where}: gold label must be 0..3, got {block[1]!r}")
    if not all(ending.strip() for ending in block[2:]):
        raise GbdError(f"{where}: an ending is empty")
    return HellaSwagItem(activity_label, ctx, block[2:], int(block[1]))


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise GbdError(f"data file {path} not found (data directory: set GBD_DATA_DIR or pass a path)")
    return path


def _file_text(path: Path, name: str) -> TextSource:
    """A local text file as HF-style rows joined with "\\n\\n" (universal newlines, like the HF script)."""
    path = _existing(path)
    with open(path, encoding="utf-8") as f:
        text = join_rows(hf_rows(f.read()))
    return TextSource(text, name, str(path), sha256(path))
