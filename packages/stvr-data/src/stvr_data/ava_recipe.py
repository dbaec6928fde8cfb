"""The AVA recipe: `download_ava` fetches the release videos, `prepare_ava` builds the STVR
benchmark from the release (paper §5). Corpus facts and the readers are in `stvr_data.ava`;
the steps shared with UCF101-24 are in `stvr_data.build`."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from stvr_data import build, manifest, splits, tubelets
from stvr_data.atomic import atomic_write
from stvr_data.ava import AVA_SEGMENT, AvaAnnotations, find_version, load_annotations
from stvr_data.errors import MediaError, StvrDataError
from stvr_data.fetch import fetch_video

FAILED_LIST = "failed.csv"
log = logging.getLogger(__name__)


def download_ava(annotations, source: str, dest, *, workers: int = 4, retries: int = 3) -> pd.DataFrame:
    """Fetch every video of the release in `annotations` from `source` (an http(s) base URL
    such as the AVA mirror's `.../trainval`, or a folder) into `dest`, resuming partial
    transfers. Returns `video_id, file_name, path, error` (path null when it failed); one
    failure does not stop the others. The failures are also written to `dest/failed.csv`."""
    names = load_annotations(annotations).file_names
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def one(item):
        video_id, name = item
        try:
            return video_id, name, str(fetch_video(source, name, dest, retries=retries)), None
        except MediaError as err:
            return video_id, name, None, str(err)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(tqdm(pool.map(one, sorted(names.items())), total=len(names), desc="download", unit="video"))
    result = pd.DataFrame(rows, columns=["video_id", "file_name", "path", "error"])
    failed = result[result.path.isna()]
    if len(failed):
        with atomic_write(dest / FAILED_LIST) as path:
            failed.to_csv(path, index=False)
    else:
        (dest / FAILED_LIST).unlink(missing_ok=True)  # no longer true
    return result

def prepare_ava(annotations, videos, out, *, options=None, min_tubelets: int = 100,
                num_val_labels: int = 27, num_test_labels: int = 27, split_file=None,
                skip_bad_rows: bool = False, ava_version: str | None = None) -> dict:
    """Build the STVR benchmark from one AVA release into `out` (paper §5).

    Steps: read and validate the release (`load_annotations`), link each subset's boxes
    into tubelets, hold out `num_val_labels` + `num_test_labels` combined labels with
    more than `min_tubelets` tubelets in the validation videos (or the labels of an
    official `split_file`), strip their seconds from the training videos, then the
    generic `stvr_data.build.build_benchmark` (pairs, ground truth, media from `videos`,
    a folder or http(s) base URL, manifests). `ava_version` ('2.1', '2.2') picks the
    release when `annotations` holds several; None takes the newest and logs which.
    Returns the dataset card.
    """
    options = options or build.BuildOptions()
    if ava_version is None:
        ava_version = find_version(annotations)
        log.warning("using AVA v%s, the newest release in %s (choose one with --ava-version)",
                    ava_version, annotations)
    release = load_annotations(annotations, version=ava_version, skip_bad_rows=skip_bad_rows)
    linked = {subset: tubelets.link_tubelets(getattr(release, subset), source=str(release.files[subset]))
              for subset in ("train", "val")}
    if split_file is not None:
        val_labels, test_labels = splits.read_split_file(split_file)
    else:
        val_labels, test_labels = splits.choose_heldout_labels(
            linked["val"], min_tubelets=min_tubelets, num_val=num_val_labels,
            num_test=num_test_labels, seed=options.seed)
    table = splits.assign_splits(linked["train"], linked["val"], val_labels, test_labels)
    _check_heldout(table, split_file or "the chosen labels")
    corpus = build.Corpus(
        name=f"STVR-AVA v{release.version}", tubelets=table, videos=_videos_table(release),
        keyframe_interval=1.0, media_span=AVA_SEGMENT,
        card={"source": {"dataset": "AVA", "version": release.version,
                         "annotations": {r: p.name for r, p in release.files.items()},
                         "videos": str(videos) if videos else None},
              "action_names": {str(k): v for k, v in sorted(release.action_names.items())},
              "heldout": {"val": list(val_labels), "test": list(test_labels),
                          "from": Path(split_file).name if split_file else "chosen"},
              "annotation_rows": {"train": len(release.train), "val": len(release.val),
                                  "excluded": release.excluded_rows,
                                  "skipped_bad": len(release.bad_rows)}},
        input_hashes={p.name: manifest.sha256_file(p) for p in release.files.values()}
        | ({Path(split_file).name: manifest.sha256_file(split_file)} if split_file else {}),
        reports={"bad_rows.csv": release.bad_rows.to_csv(index=False)} if len(release.bad_rows) else {})
    extra = {"min_tubelets": min_tubelets, "num_val_labels": num_val_labels,
             "num_test_labels": num_test_labels, "skip_bad_rows": skip_bad_rows,
             "ava_version": release.version}
    return build.build_benchmark(corpus, videos, out, options, extra_options=extra)


def _check_heldout(table: pd.DataFrame, source) -> None:
    """A split whose labels do not occur (with two or more tubelets) leaves nothing to evaluate."""
    for split in ("val", "test"):
        if not (table.split == split).any():
            raise StvrDataError(f"{source}: none of the {split} labels has two or more tubelets in the "
                                f"validation videos, so the benchmark would have no {split} pairs")


def _videos_table(release: AvaAnnotations) -> pd.DataFrame:
    """Every annotated video with its file name; a video missing from the file list
    is looked for as `<id>.mp4`."""
    frames = [pd.DataFrame({"video_id": sorted(getattr(release, s)["video_id"].unique()), "subset": s})
              for s in ("train", "val")]
    table = pd.concat(frames, ignore_index=True).drop_duplicates("video_id")
    table["source_file"] = [release.file_names.get(v, f"{v}.mp4") for v in table.video_id]
    table["clip_start"], table["clip_end"] = AVA_SEGMENT
    return table.reset_index(drop=True)
