"""Media shards: several processes or hosts cut the clips of one benchmark, one merge commits it.

The media step (fetching and cutting every video) is the long part of a build. With
``--shard K/N`` (1-based: K = 1..N, as SLURM's ``--array=1-N`` numbers its tasks) a build
does the media of its share of the videos only: the videos sorted by id, shard K takes
positions K-1, K-1+N, K-1+2N, ... (`Shard.take`), so the N shards together do each video
exactly once. A shard writes nothing of the benchmark itself: its new clips and a status
file (the media row of each of its videos, and the fingerprint of the build it belongs
to) go to its own folder ``OUT/.stvr-shards/K-of-N/``. A build with ``--merge`` then
assembles tables, reports and card from the N status files exactly as an unsharded
build would, cutting nothing; a build with neither flag takes the shards' finished clips
over instead of cutting them again, and does the rest itself.

Concurrency (every lock is a `stvr_data.lock.OutputLock`):
- A shard holds its own folder's lock from start to end, and nothing else: N shards on N
  hosts run at once against one shared folder, and the same shard started twice is
  refused. It reads the benchmark in place only to reuse clips committed there.
- A build without ``--shard`` holds the benchmark's lock (`outdir.open_output`) and,
  from before its media step until after its commit, the lock of every shard folder
  (`claim`): it refuses while a shard runs, and no shard starts while it runs. After its
  commit, the shard folders it used are removed.
- Builds leave the partial files in the shards folder alone (`outdir.remove_partials`);
  each shard removes those of its own dead runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stvr_data import atomic, outdir
from stvr_data.errors import StvrDataError
from stvr_data.lock import LOCK_FILE, OutputLock
from stvr_data.manifest import SHARDS_DIR, STAGING_DIR

STATUS_FILE = "status.json"  # in a shard's folder, written when its media step is done
_FOLDER = re.compile(r"([1-9][0-9]*)-of-([1-9][0-9]*)")


class ShardError(StvrDataError):
    """A bad ``--shard`` value, or shards that cannot be merged (missing, unfinished, of
    another build)."""


@dataclass(frozen=True, order=True)
class Shard:
    """Shard `index` (1-based, 1..count) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def folder(self) -> str:
        """Its folder's name under ``OUT/.stvr-shards/``."""
        return f"{self.index}-of-{self.count}"

    def take(self, videos: pd.DataFrame) -> pd.DataFrame:
        """Its share of `videos`: every `count`-th row of the table sorted by ``video_id``,
        from row ``index - 1``."""
        ordered = videos.sort_values("video_id", kind="stable").reset_index(drop=True)
        return ordered.iloc[self.index - 1::self.count].reset_index(drop=True)


def parse_shard(text: str) -> Shard:
    """``'2/4'`` -> ``Shard(2, 4)``; `ShardError` unless ``K/N`` with ``1 <= K <= N``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match and 1 <= int(match.group(1)) <= int(match.group(2)):
        return Shard(int(match.group(1)), int(match.group(2)))
    raise ShardError(f"--shard {text!r}: expected K/N with 1 <= K <= N (1-based: 1/4, 2/4, 3/4, 4/4)")


def run_shard(videos: pd.DataFrame, out, shard: Shard, fingerprint: dict, *, command: str,
              cut: Callable[[pd.DataFrame, Path], pd.DataFrame]) -> dict:
    """Do the media of `shard`'s share of `videos` and write its status file; return the status.

    `cut(videos, stage_dir)` is the build's media step: it returns the videos with their
    media columns and writes new clips under `stage_dir`. The status (``shard``,
    ``fingerprint``, ``videos``: ``video_id`` and the `media_step.MEDIA_COLUMNS` of each) is written when the
    step is done; a shard stopped before that has none, and a merge calls it unfinished.
    Raises `OutputLockedError` when the same shard runs already (or a merge holds it).
    """
    from stvr_data.media_step import MEDIA_COLUMNS

    root = Path(out)
    _check_root(root)
    folder = root / SHARDS_DIR / shard.folder
    with OutputLock(folder, command=command):
        (folder / STATUS_FILE).unlink(missing_ok=True)  # true again only once this run is done
        outdir.remove_partials(folder)
        done = cut(shard.take(videos), folder)
        status = {"shard": str(shard), "fingerprint": fingerprint,
                  "videos": done[["video_id", *MEDIA_COLUMNS]].to_dict("records")}
        atomic.write_text(folder / STATUS_FILE, json.dumps(status, indent=1) + "\n")
    return status


def _check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise outdir.OutputDirectoryError(f"{root}: exists and is not a directory")
    if root.is_dir():
        outdir.check_ownership(root, stage_exists=(root / STAGING_DIR).is_dir(),
                               unclean=(root / LOCK_FILE).exists())


def summary(status: dict) -> str:
    """One line about a finished shard (printed by the CLI)."""
    counts = Counter(row["status"] for row in status["videos"])
    done = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    count = status["shard"].split("/")[1]
    return (f"shard {status['shard']}: {len(status['videos'])} videos ({done}); when all {count} "
            "shards are done, run the same command with --merge instead of --shard")


@dataclass
class Claimed:
    """The shard folders a build holds: `statuses` maps each shard to its status (None
    while unfinished)."""

    root: Path
    statuses: dict[Shard, dict | None]

    def folder(self, shard: Shard) -> Path:
        return self.root / SHARDS_DIR / shard.folder

    def adopt(self, stage: Path) -> int:
        """Move the shards' finished clips into `stage` (same relative path); their count.

        The media step then finds them finished there (`stvr_data.media_step`) and the commit
        moves them into place, as if this build had cut them.
        """
        from stvr_data.media_step import CLIP_DIR

        moved = 0
        for shard in self.statuses:
            folder = self.folder(shard)
            for clip in sorted((folder / CLIP_DIR).rglob("*.mp4")):  # UCF ids hold a class folder
                if clip.name.startswith("."):
                    continue  # the partial file of a dead shard run
                dest = outdir.within(stage, clip.relative_to(folder).as_posix())
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(clip, dest)
                moved += 1
        return moved

    def merged_rows(self, videos: pd.DataFrame, fingerprint: dict, stage: Path) -> list[dict]:
        """The media rows of `videos` (in their order) read from the shards' statuses.

        Raises `ShardError` when a shard is missing or unfinished, was cut for another build
        (`fingerprint` differs), or a clip it reports is in none of the shard folder,
        `stage` or the benchmark.
        """
        self._check_complete()
        wanted = json.loads(json.dumps(fingerprint))  # as a status file holds it
        rows = {}
        for shard, status in sorted(self.statuses.items()):
            if status["fingerprint"] != wanted:
                differ = sorted(k for k in wanted.keys() | status["fingerprint"].keys()
                                if wanted.get(k) != status["fingerprint"].get(k))
                raise ShardError(f"{self.folder(shard)}: shard {shard} was cut for another build "
                                 f"({', '.join(differ)} differ); run it again with the merge's options")
            rows.update({row["video_id"]: (shard, row) for row in status["videos"]})
        for video in videos.video_id:
            if video not in rows:
                raise ShardError(f"{self.root / SHARDS_DIR}: no shard has video {video}; run the shards again")
            shard, row = rows[video]
            if row["status"] == "ok" and not any(
                    outdir.within(where, row["clip_path"]).is_file()
                    for where in (self.folder(shard), stage, self.root)):
                raise ShardError(f"{self.folder(shard)}: {row['clip_path']} of shard {shard} is gone; "
                                 f"run shard {shard} again, then --merge")
        from stvr_data.media_step import MEDIA_COLUMNS

        return [{c: rows[v][1][c] for c in MEDIA_COLUMNS} for v in videos.video_id]

    def _check_complete(self) -> None:
        base = self.root / SHARDS_DIR
        counts = sorted({shard.count for shard in self.statuses})
        if not counts:
            raise ShardError(f"{base}: no media shards to merge; run the build with --shard K/N "
                             "for K = 1..N first")
        if len(counts) > 1:
            raise ShardError(f"{base}: shards of {' and '.join(map(str, counts))} in all are there; "
                             "remove the folders of the count you do not use")
        unfinished = [str(Shard(k, counts[0])) for k in range(1, counts[0] + 1)
                      if self.statuses.get(Shard(k, counts[0])) is None]
        if unfinished:
            raise ShardError(f"{base}: shard {', '.join(unfinished)} has not finished (no {STATUS_FILE}); "
                             "run it with --shard, then --merge again")

    def remove(self) -> None:
        """Delete the shard folders (after the commit that took their clips over)."""
        for shard in self.statuses:
            shutil.rmtree(self.folder(shard), ignore_errors=True)
        base = self.root / SHARDS_DIR
        if base.is_dir() and not any(base.iterdir()):
            base.rmdir()


@contextmanager
def claim(root, *, command: str, media: bool = True) -> Iterator[Claimed]:
    """Hold the lock of every shard folder under `root` and yield them with their statuses
    (none, and nothing locked, for a build without media: it leaves the shards alone).

    Raises `OutputLockedError` naming the shard that is still running.
    """
    base = Path(root) / SHARDS_DIR
    found = sorted(Shard(int(m.group(1)), int(m.group(2)))
                   for m in (_FOLDER.fullmatch(p.name) for p in (base.iterdir() if base.is_dir() else ()))
                   if m and media and int(m.group(1)) <= int(m.group(2)))
    with ExitStack() as locks:
        for shard in found:
            locks.enter_context(OutputLock(base / shard.folder, command=command))
        yield Claimed(Path(root), {shard: _read_status(base / shard.folder) for shard in found})


def _read_status(folder: Path) -> dict | None:
    path = folder / STATUS_FILE
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ShardError(f"{path}: unreadable ({err}); run this shard again") from None
    if not isinstance(status, dict) or not {"fingerprint", "videos"} <= status.keys():
        raise ShardError(f"{path}: not a shard status; run this shard again")
    return status
