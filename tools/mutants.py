"""Mutation check: apply each named mutant to a copy of the repository and require the suite to fail.

A mutant is one TOML file in ``tools/mutants/`` (one file each, so that adding one never conflicts):

    why = "the bug this mutant re-introduces"
    file = "theory/bca.py"              # path relative to the repository root
    find = "exact text"                 # must occur exactly once in the file
    replace = "mutated text"
    tests = ["tests/test_bca.py"]       # pytest arguments that must FAIL on the mutant

For every mutant the tracked files are copied to a temporary folder, the selected tests are run there
unchanged first (they must pass: a kill only counts against a green baseline, run once per distinct
selection), then with the mutation applied. A mutant is *killed* when pytest exits with status 1 (tests
failed); a collection error, an empty selection or a stale mutant (its text no longer occurs exactly once)
is reported, never counted as a kill.

    python tools/mutants.py            # all mutants; exit status 1 when any survives
    python tools/mutants.py --list     # names and reasons
    python tools/mutants.py NAME ...   # only these
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTANTS_DIR = REPO / "tools" / "mutants"
PYTEST_FAILED = 1


@dataclass(frozen=True)
class Mutant:
    """A named source edit and the tests that must fail on it."""

    name: str
    why: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]


def load_mutants(folder: Path = MUTANTS_DIR) -> list[Mutant]:
    """Every ``*.toml`` in ``folder``, sorted by name; a malformed file is a one-line error."""
    out = []
    for path in sorted(folder.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        missing = {"why", "file", "find", "replace", "tests"} - set(data)
        if missing:
            raise SystemExit(f"mutants: {path.name} lacks {sorted(missing)}")
        out.append(Mutant(path.stem, data["why"], data["file"], data["find"], data["replace"], tuple(data["tests"])))
    return out


TESTED_REPORTS = ("reports/smollm2-full/surgery.json",)     # the full-size run the coverage tests measure on


def copy_tracked(dest: Path) -> None:
    """Copy the files git tracks (and untracked, not ignored ones) as they are in the working tree; of the reports
    only those the tests read (TESTED_REPORTS)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and (not rel.startswith("reports/") or rel in TESTED_REPORTS):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


class StaleMutant(ValueError):
    """The mutant's ``find`` text no longer occurs exactly once: the code moved on, the mutant must follow."""


def apply(root: Path, mutant: Mutant) -> None:
    """Replace the one occurrence of ``find`` in ``file``; more or fewer occurrences are an error."""
    path = root / mutant.file
    text = path.read_text()
    count = text.count(mutant.find)
    if count != 1:
        raise StaleMutant(f"the text to mutate occurs {count} times in {mutant.file}")
    path.write_text(text.replace(mutant.find, mutant.replace))


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[int, float]:
    """pytest exit status and seconds for ``tests`` run in ``root`` (imports resolve to ``root``)."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("GBD_DATA_DIR", str(REPO.parent / "shared" / "data"))
    start = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return rc, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    mutants = load_mutants()
    if args.names:
        unknown = set(args.names) - {m.name for m in mutants}
        if unknown:
            raise SystemExit(f"mutants: unknown {sorted(unknown)}; see --list")
        mutants = [m for m in mutants if m.name in args.names]
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.why}")
        return 0
    survivors, baselines = [], {}
    for m in mutants:
        with tempfile.TemporaryDirectory(prefix="gbd-mutant-") as tmp:
            root = Path(tmp)
            copy_tracked(root)
            if m.tests not in baselines:
                baselines[m.tests] = run_tests(root, m.tests)[0]
            if baselines[m.tests] != 0:
                print(f"{m.name:<40} BASELINE FAILS (exit {baselines[m.tests]}): fix the suite first")
                survivors.append(m.name)
                continue
            try:
                apply(root, m)
            except StaleMutant as e:
                print(f"{m.name:<40} STALE: {e}")
                survivors.append(m.name)
                continue
            rc, secs = run_tests(root, m.tests)
        killed = rc == PYTEST_FAILED
        print(f"{m.name:<40} {'killed' if killed else f'SURVIVED (exit {rc})'}  ({secs:.0f} s)  {m.why}")
        if not killed:
            survivors.append(m.name)
    print(f"{len(mutants) - len(survivors)} of {len(mutants)} mutants killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
