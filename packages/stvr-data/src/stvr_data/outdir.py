"""A benchmark directory written as a transaction: owned, staged, committed by its card.

Rules a build follows (`open_output` and `Output.commit` implement them):
- Ownership. A directory is a benchmark when it holds a `dataset.json` that stvr-data
  wrote (``format: stvr-benchmark``); the files it may replace or delete are exactly those
  its card lists. A non-empty directory that is not a benchmark is refused.
- Exclusion. The build holds the directory's lock (`stvr_data.lock`) from start to end.
- Staging. Tables, the figure, reports and new clips are written under
  ``.stvr-staging/`` (same relative paths) while the old benchmark stays as it was.
- Commit. The new card is written into the staging folder first: that is the commit
  point. Then the old card is removed, the files only it listed are deleted, the staged
  files are renamed into place and the card last. A run killed before the commit point
  leaves the old benchmark whole; one killed after it has its commit finished by the next
  run (`open_output`), and meanwhile the directory has no card, so nobody reads a mix.
- Generated files. `README.md` and `croissant.json` are made from the card (they hash
  it), so the card names them under ``generated`` instead of hashing them; the commit
  writes them into the staging folder after the card and moves them with the rest.
- Checks. The files a card lists must exist with their recorded sizes (checked every
  run) and, after an unclean stop or in `verify`, their recorded SHA-256; the generated
  files must exist and, in those deep checks, be what the card generates.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from stvr_data import atomic, manifest
from stvr_data.errors import StvrDataError
from stvr_data.lock import LOCK_FILE, OutputLock

STAGING_DIR = manifest.STAGING_DIR
SHARDS_DIR = manifest.SHARDS_DIR
REPLACES_FILE = "replaces.json"  # in the staging folder: the files the old card listed
PARTIAL_SUFFIX = ".partial"


class OutputDirectoryError(StvrDataError):
    """An output directory the build may not write into, or a path outside it."""


def within(root, relative: str) -> Path:
    """``root / relative``, refusing a `relative` that would lead outside `root`.

    Every file a build writes goes through here, so a hostile id in the annotations
    (``../../x``, an absolute path) cannot make it write elsewhere. The check is on the
    path's text: a folder the user made a symlink (``clips/`` on another disk) is allowed.
    """
    text = str(relative)
    normal = posixpath.normpath(text.replace("\\", "/"))
    if not text or posixpath.isabs(normal) or normal == "." or normal == ".." or normal.startswith("../"):
        raise OutputDirectoryError(f"{relative!r}: would be written outside {root}; refused")
    return Path(root) / normal


def is_own_card(card) -> bool:
    """A card stvr-data wrote: it carries the format marker (or, written before the
    marker existed, the file hashes and schema version every card has)."""
    if not isinstance(card, dict):
        return False
    return card.get("format") == manifest.CARD_FORMAT or {"files", "schema_version"} <= card.keys()


@dataclass
class Problem:
    """One file of a benchmark that fails a check: ``kind`` is missing | size | sha256 | extra."""

    path: str
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}{' (' + self.detail + ')' if self.detail else ''}"


def check_files(root, card: dict, *, deep: bool) -> list[Problem]:
    """Problems of the files `card` lists under `root`: missing, size, and with `deep` sha256;
    then those of its generated files (see `check_generated`)."""
    root, problems = Path(root), []
    sizes = card.get("file_sizes", {})
    for relative, digest in sorted(card.get("files", {}).items()):
        path = root / relative
        if not path.is_file():
            problems.append(Problem(relative, "missing"))
            continue
        size = path.stat().st_size
        if relative in sizes and size != sizes[relative]:
            problems.append(Problem(relative, "size", f"{size} bytes, card says {sizes[relative]}"))
        elif deep and manifest.sha256_file(path) != digest:
            problems.append(Problem(relative, "sha256", "content differs from the card"))
    return problems + check_generated(root, card, deep=deep)


def check_generated(root: Path, card: dict, *, deep: bool) -> list[Problem]:
    """The card's generated files (`manifest.generated_files`) that are missing or, with
    `deep`, differ from what the card in `root` generates."""
    from stvr_data.card import sharing_texts

    names = manifest.generated_files(card)
    problems = [Problem(name, "missing") for name in names if not (root / name).is_file()]
    if deep and len(problems) < len(names):
        texts = sharing_texts(card, root)
        problems += [Problem(name, "content", f"not what {manifest.DATASET_CARD} generates")
                     for name in names if (root / name).is_file()
                     and (root / name).read_text(encoding="utf-8") != texts.get(name)]
    return problems


def unlisted_files(root, card: dict) -> list[str]:
    """Files under `root` the card does not list (besides the card, the lock and staging)."""
    root = Path(root)
    listed = set(card.get("files", {})) | set(manifest.generated_files(card)) | {manifest.DATASET_CARD}
    return [rel for rel in _relative_files(root) if rel not in listed]


def _relative_files(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in (STAGING_DIR, SHARDS_DIR, LOCK_FILE) or not path.is_file():
            continue
        out.append(relative.as_posix())
    return out


@dataclass
class VerifyResult:
    """What `verify` found: `problems` make a benchmark bad; `notes` do not."""

    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self, root) -> str:
        """Lines for the terminal: each bad file, each note, then the verdict."""
        lines = [f"bad: {problem}" for problem in self.problems] + [f"note: {n}" for n in self.notes]
        verdict = ("ok" if self.ok else f"{len(self.problems)} bad files: rebuild with the same "
                   "command (damaged files are made again)")
        lines.append(f"{root}: {self.checked} files checked against {manifest.DATASET_CARD}, {verdict}")
        return "\n".join(lines)


def verify(benchmark) -> VerifyResult:
    """Check every file a benchmark's card lists: present, recorded size, recorded SHA-256.

    Files the card does not list are noted, as is a build that is running or was
    interrupted. Raises `ManifestError` when there is no readable card.
    """
    root = Path(benchmark)
    if (root / STAGING_DIR / manifest.DATASET_CARD).is_file() and not (root / manifest.DATASET_CARD).is_file():
        raise OutputDirectoryError(f"{root}: a build was stopped while committing; run it again to finish")
    card = manifest.read_dataset_card(root)
    if not is_own_card(card):
        raise OutputDirectoryError(f"{root}: {manifest.DATASET_CARD} is not a benchmark card")
    result = VerifyResult(checked=len(card.get("files", {})), problems=check_files(root, card, deep=True))
    result.notes += [f"{rel}: not listed in the card" for rel in unlisted_files(root, card)]
    if (root / STAGING_DIR).is_dir():
        result.notes.append(f"{STAGING_DIR}: files of a build that stopped before its commit "
                            "(kept to resume it; run the build again)")
    if (root / SHARDS_DIR).is_dir():
        result.notes.append(f"{SHARDS_DIR}: clips of media shards not merged yet (run the build with --merge)")
    if (root / LOCK_FILE).exists():
        result.notes.append(f"{LOCK_FILE}: a build is running here or was stopped uncleanly")
    return result


@dataclass
class Output:
    """An output directory held by one build: `root`, `stage` (where new files go),
    `previous` (the card in place, or None) and `unclean` (an earlier build died here)."""

    root: Path
    stage: Path
    previous: dict | None
    unclean: bool

    def staged(self, relative: str) -> Path:
        """Where the build writes `relative` (a path under the benchmark); folders made."""
        path = within(self.stage, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def listed(self) -> dict:
        return dict((self.previous or {}).get("files", {}))

    def discard(self, problems: list[Problem]) -> None:
        """Delete damaged files the current card lists or generates, so that they are made again."""
        owned = set(self.listed()) | set(manifest.generated_files(self.previous or {}))
        for problem in problems:
            if problem.path in owned:
                within(self.root, problem.path).unlink(missing_ok=True)

    def drop_stage(self) -> None:
        """Forget the staged files of a stopped build (when the benchmark in place is current)."""
        shutil.rmtree(self.stage, ignore_errors=True)

    def commit(self, card: dict, files: list[str]) -> dict:
        """Make the benchmark `card` + `files` (paths relative to the root) current.

        A file is read from the staging folder when staged there, else from its place.
        Refuses, before changing anything, to replace a file the current card does not list.
        """
        old = self.listed()
        sources = {}
        for relative in sorted(set(files)):
            staged = within(self.stage, relative)
            final = within(self.root, relative)
            if staged.is_file():
                if final.exists() and relative not in old:
                    raise OutputDirectoryError(f"{final}: exists and is not part of the benchmark here; "
                                               "move it away (nothing was replaced)")
                sources[relative] = staged
            elif final.is_file():
                sources[relative] = final
            else:
                raise OutputDirectoryError(f"{final}: the build did not write it")
        mine = set(manifest.generated_files(self.previous or {}))
        for name in manifest.GENERATED_FILES:
            if (self.root / name).exists() and name not in mine:
                raise OutputDirectoryError(f"{self.root / name}: exists and is not part of the benchmark "
                                           "here; move it away (nothing was replaced)")
        self.stage.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.stage / REPLACES_FILE, json.dumps(sorted(set(old) - set(files))) + "\n")
        manifest.write_dataset_card(self.stage, card, files=sources)  # the commit point
        finish_commit(self.root)
        return manifest.read_dataset_card(self.root)


def finish_commit(root) -> bool:
    """Complete a commit whose card is in the staging folder; False when there is none.

    Idempotent: a run killed in the middle of it is finished by the next call.
    """
    root = Path(root)
    stage = root / STAGING_DIR
    card_path = stage / manifest.DATASET_CARD
    if not card_path.is_file():
        return False
    card = manifest.read_dataset_card(stage)
    _stage_generated(stage, card)
    replaced = json.loads((stage / REPLACES_FILE).read_text()) if (stage / REPLACES_FILE).is_file() else []
    (root / manifest.DATASET_CARD).unlink(missing_ok=True)
    for relative in replaced:
        within(root, relative).unlink(missing_ok=True)
    for relative in [*card["files"], *manifest.generated_files(card)]:
        staged = within(stage, relative)
        if staged.is_file():
            final = within(root, relative)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
    os.replace(card_path, root / manifest.DATASET_CARD)
    shutil.rmtree(stage)
    _remove_empty_dirs(root, replaced)
    return True


def _stage_generated(stage: Path, card: dict) -> None:
    """Write the staged card's generated files into `stage`, those not there yet (they
    depend only on the card, so a commit finished by a later run makes the same bytes)."""
    from stvr_data.card import sharing_texts

    missing = [name for name in manifest.generated_files(card) if not (stage / name).is_file()]
    if missing:
        texts = sharing_texts(card, stage)
        for name in missing:
            atomic.write_text(within(stage, name), texts[name])


def _remove_empty_dirs(root: Path, relatives: list[str]) -> None:
    for relative in relatives:
        folder = (root / relative).parent
        while folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def remove_partials(root) -> int:
    """Delete the ``*.partial`` files of dead runs below `root` (call with the lock held).

    The shards folder is left alone: running shards write there, each under its own lock.
    """
    root, count = Path(root), 0
    for path in root.rglob(f"*{PARTIAL_SUFFIX}"):
        if path.relative_to(root).parts[0] == SHARDS_DIR:
            continue
        if path.is_file() and path.name.startswith("."):
            path.unlink()
            count += 1
    return count


@contextmanager
def open_output(root, *, command: str):
    """Lock `root` (created if need be) and yield its `Output`, after finishing an
    interrupted commit and removing partial files of dead runs.

    Raises `OutputLockedError` when another run holds it and `OutputDirectoryError` when it
    is not empty and not a benchmark stvr-data wrote (nothing in it is touched then).
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OutputDirectoryError(f"{root}: exists and is not a directory")
    with OutputLock(root, command) as lock:
        stage = root / STAGING_DIR
        check_ownership(root, stage_exists=stage.is_dir(), unclean=lock.unclean)
        finish_commit(root)
        remove_partials(root)
        previous = manifest.read_dataset_card(root) if (root / manifest.DATASET_CARD).is_file() else None
        yield Output(root=root, stage=stage, previous=previous, unclean=lock.unclean or stage.is_dir())


def check_ownership(root: Path, *, stage_exists: bool, unclean: bool) -> None:
    """Refuse a `root` that is neither empty (bar the lock, staging and shards folders, or
    any file after an unclean stop) nor a benchmark stvr-data wrote."""
    card_path = root / manifest.DATASET_CARD
    if card_path.is_file():
        try:
            card = manifest.read_dataset_card(root)
        except StvrDataError:
            card = None
        if not is_own_card(card):
            raise OutputDirectoryError(f"{card_path}: not a benchmark card written by stvr-data; "
                                       "build into an empty or new directory")
        return
    others = [p.name for p in root.iterdir() if p.name not in (LOCK_FILE, STAGING_DIR, SHARDS_DIR)]
    if others and not (stage_exists or unclean):
        raise OutputDirectoryError(f"{root}: not empty ({', '.join(sorted(others)[:3])}"
                                   f"{', ...' if len(others) > 3 else ''}) and not a benchmark built by "
                                   "stvr-data; build into an empty or new directory")
