"""UCF101-24: the corpus of the paper's second re-localization benchmark (paper §5, Table 1).

Corpus facts (the corrected annotations of the corrected-UCF101-Annots project):
- 24 action classes (``CLASSES``, index order of the files), 3194 videos, 4458 tubes; one
  class per video, one or more actor tubes per video.
- Videos are UCF101 ``.avi`` files, 25 fps, 320x240, named ``<Class>/v_<Class>_gXX_cYY``.
- Split 1 of UCF101: ``testlist01.txt`` lists the 910 test videos (one per line,
  ``Class/v_Class_gXX_cYY``, optionally ``.avi``); every other video is a training one.
- ``pyannot.pkl`` (a pickle, written by Python 2 era code: read with ``encoding="latin1"``):
  ``{video_id: {"numf", "label", "annotations": [{"label", "sf", "ef", "boxes"}]}}``
  with ``sf`` the 0-based first frame, ``ef`` exclusive, ``boxes`` one ``[x, y, w, h]`` row
  per frame ``sf..ef-1`` in **1-based pixels**. ``numf`` and ``boxes`` are numpy
  **uint8 or uint16**: ``x + w`` silently wraps around in uint8 (1445 tubes have
  ``x + w > 255``), so every value is cast to float64 before any arithmetic.
  ``pyannot_with_class_names.pkl`` wraps the same dict as ``{"db", "trainvideos", "classes"}``.
- The ACT/MOC ``UCF101v2-GT.pkl`` is accepted too: ``labels``, ``nframes``,
  ``resolution`` ((h, w) per video), ``train_videos`` / ``test_videos`` (lists per
  split), ``gttubes`` ``{video: {label: [array [N, 5]: frame (1-based), x1, y1, x2, y2]}}``
  in pixel edge coordinates. It is converted to the pyannot layout when read.

The benchmark (paper §5: "following the same intuition" as AVA, 14 / 5 / 5 train / val /
test classes). Our reading of that sentence, mirroring the AVA recipe where training
labels come from the training videos and held-out labels from the validation videos:
each tube is a tubelet whose combined label is its **class name** (one action, so the
"combined" label is the class; names keep manifests readable and only equality
matters downstream); classes are split 14 / 5 / 5 with a seeded permutation (or a JSON
file); when the video split is known (``testlist01.txt``, or the split carried by the
annotation file) training-class tubes come from training videos and val/test-class
tubes from test videos, otherwise every tube of a class is used.

Time is resampled to the 24-fps clip grid at the border: clip ``k`` covers source time
``[k/3, (k+1)/3)`` s and is one keyframe (``KEYFRAME_INTERVAL = 1/3`` s) carrying the
box of the 25-fps frame at the clip's **middle**, ``floor((k + 1/2) / 3 * 25)``; it
belongs to a tube when that frame lies in ``[sf, ef)`` and the whole clip lies inside
the video. Boxes become normalised ``[x1, y1, x2, y2]``: ``x1 = (x - 1) / 320``,
``x2 = (x - 1 + w) / 320`` (the box covers pixels ``x .. x+w-1``), clipped to [0, 1].
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stvr_data import manifest
from stvr_data.build import BuildOptions, Corpus, build_benchmark
from stvr_data.errors import AnnotationError, MediaError
from stvr_data.pickles import load_restricted
from stvr_data.text import read_json, read_text
from stvr_data.tubelets import boxes_series
from stvr_data.ucf24_checks import check_video_id, checked_videos

CLASSES = (
    "Basketball", "BasketballDunk", "Biking", "CliffDiving", "CricketBowling", "Diving",
    "Fencing", "FloorGymnastics", "GolfSwing", "HorseRiding", "IceDancing", "LongJump",
    "PoleVault", "RopeClimbing", "SalsaSpin", "SkateBoarding", "Skiing", "Skijet",
    "SoccerJuggling", "Surfing", "TennisSwing", "TrampolineJumping", "VolleyballSpiking",
    "WalkingWithDog",
)
SOURCE_FPS = 25
FRAME_SIZE = (320, 240)  # (width, height) of every UCF101 video
KEYFRAME_INTERVAL = manifest.CLIP_FRAMES / manifest.CLIP_FPS  # 1/3 s: one keyframe per clip
CLASS_SPLIT_SIZES = {"train": 14, "val": 5, "test": 5}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class UcfAnnotations:
    """Annotations in the pyannot layout, whatever file they came from.

    `videos` maps ``Class/v_name`` to ``{"numf", "label", "annotations"}`` exactly as in
    ``pyannot.pkl`` (original dtypes kept; an optional ``"resolution"`` (h, w) when the
    file gave one). `test_videos` is the video split the file carried, if any.
    """

    path: str
    format: str  # "pyannot" | "pyannot_with_class_names" | "act_gt"
    videos: dict
    classes: tuple[str, ...] = CLASSES
    test_videos: frozenset[str] | None = None


def read_pyannot(path: str | os.PathLike) -> dict:
    """The pyannot-layout dict ``{video_id: {numf, label, annotations}}`` of any accepted file."""
    return read_annotations(path).videos


def read_annotations(path: str | os.PathLike) -> UcfAnnotations:
    """Load ``pyannot.pkl``, ``pyannot_with_class_names.pkl`` or ``UCF101v2-GT.pkl``.

    The pickle is loaded with the restricted unpickler (numpy arrays and builtins only);
    the format is detected from its keys and each video entry is validated.
    """
    path = Path(path)
    if path.suffix.lower() == ".rar":
        raise AnnotationError(path, None, "a RAR archive; pass pyannot.pkl or UCF101v2-GT.pkl")
    data = load_restricted(path)
    try:
        return _parse_annotations(data, path)
    except AnnotationError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as err:
        # a field of the wrong kind deep inside (a number where a dict belongs, ...)
        raise AnnotationError(path, None, f"unexpected structure ({type(err).__name__}: {err})") from None


def _parse_annotations(data, path: Path) -> UcfAnnotations:
    """The layout of the unpickled `data`, detected from its keys, validated."""
    if isinstance(data, dict) and {"gttubes", "nframes", "labels"} <= data.keys():
        return _from_act_gt(data, path)
    if isinstance(data, dict) and {"db", "classes"} <= data.keys():
        classes = tuple(str(name) for name in data["classes"])
        train = {str(v) for v in data.get("trainvideos", [])}
        videos = checked_videos(data["db"], path, len(classes), FRAME_SIZE)
        test = frozenset(v for v in videos if v not in train) if train else None
        return UcfAnnotations(str(path), "pyannot_with_class_names", videos, classes, test)
    if isinstance(data, dict) and any(isinstance(v, dict) and "annotations" in v for v in data.values()):
        return UcfAnnotations(str(path), "pyannot", checked_videos(data, path, len(CLASSES), FRAME_SIZE))
    kind = f"dict with keys {sorted(map(str, data))[:6]}" if isinstance(data, dict) else type(data).__name__
    raise AnnotationError(path, None, f"not a UCF101-24 annotation file ({kind}); expected "
                          "pyannot.pkl (video -> {numf, label, annotations}) or UCF101v2-GT.pkl")


def _from_act_gt(gt: dict, path: Path) -> UcfAnnotations:
    """Convert the ACT/MOC cache to the pyannot layout (1-based frames -> sf/ef, x1y1x2y2
    pixel edges -> 1-based xywh, kept in float64 so the round trip is exact)."""
    classes = tuple(str(name) for name in gt["labels"])
    videos = {}
    for video_id, by_label in gt["gttubes"].items():
        if not by_label:
            continue
        if video_id not in gt["nframes"] or video_id not in gt.get("resolution", {}):
            raise AnnotationError(path, None, f"video '{video_id}': has tubes but no 'nframes' or 'resolution'")
        numf = int(gt["nframes"][video_id])
        labels = sorted(int(label) for label in by_label)
        tubes = [_act_tube(np.asarray(t, dtype=np.float64), label, path, f"video '{video_id}' label {label}")
                 for label in labels for t in by_label[label]]
        videos[str(video_id)] = {"numf": numf, "label": labels[0], "annotations": tubes,
                                 "resolution": tuple(int(v) for v in gt["resolution"][video_id])}
    test = gt.get("test_videos")
    test_videos = frozenset(str(v) for v in test[0]) if test else None
    return UcfAnnotations(str(path), "act_gt", checked_videos(videos, path, len(classes), FRAME_SIZE), classes, test_videos)


def _act_tube(tube: np.ndarray, label: int, path: Path, where: str) -> dict:
    if tube.ndim != 2 or tube.shape[1] != 5 or len(tube) == 0:
        raise AnnotationError(path, None, f"{where}: tube of shape {tube.shape}, expected [N, 5]")
    frames = tube[:, 0].astype(np.int64)
    if (np.diff(frames) != 1).any():
        raise AnnotationError(path, None, f"{where}: tube frames are not consecutive")
    x1, y1, x2, y2 = tube[:, 1], tube[:, 2], tube[:, 3], tube[:, 4]
    boxes = np.stack([x1 + 1.0, y1 + 1.0, x2 - x1, y2 - y1], axis=1)
    return {"label": label, "sf": int(frames[0]) - 1, "ef": int(frames[-1]), "boxes": boxes}


def clip_keyframes(sf: int, ef: int, numf: int, *, clip_fps: int = manifest.CLIP_FPS,
                   clip_frames: int = manifest.CLIP_FRAMES, source_fps: int = SOURCE_FPS):
    """The clip-grid keyframes of frames ``[sf, ef)`` of a ``numf``-frame video.

    Returns ``(k, frame)``: int arrays of the clip indices ``k`` (clip ``k`` starts at
    ``k * clip_frames / clip_fps`` s) and the 0-based source frame at each clip's middle.
    Integer arithmetic, so no keyframe is lost or doubled to rounding.
    """
    # Clips that end inside the video: (k + 1) * clip_frames / clip_fps <= numf / source_fps.
    num_clips = (numf * clip_fps) // (clip_frames * source_fps)
    k = np.arange(num_clips, dtype=np.int64)
    middle = ((2 * k + 1) * clip_frames * source_fps) // (2 * clip_fps)
    inside = (middle >= sf) & (middle < ef)
    return k[inside], middle[inside]


def normalised_boxes(boxes_xywh, *, width: int, height: int) -> np.ndarray:
    """1-based pixel ``[x, y, w, h]`` rows -> normalised ``[x1, y1, x2, y2]`` in [0, 1].

    Casts to float64 first: the published arrays are uint8/uint16 and ``x + w`` wraps.
    """
    b = np.asarray(boxes_xywh).astype(np.float64)  # (N, 4), cast before any arithmetic
    x1, y1 = b[:, 0] - 1.0, b[:, 1] - 1.0
    out = np.stack([x1 / width, y1 / height, (x1 + b[:, 2]) / width, (y1 + b[:, 3]) / height], axis=1)
    return np.clip(out, 0.0, 1.0)


def tubes_to_tubelets(videos: dict, *, classes=CLASSES, clip_fps: int = manifest.CLIP_FPS,
                      source_fps: int = SOURCE_FPS) -> pd.DataFrame:
    """Every tube of a pyannot-layout dict as a tubelet on the clip grid.

    Columns ``video_id, person_id, label, start, end, boxes`` (`TUBELETS_SCHEMA` without
    ``tubelet_id`` and ``split``): ``person_id`` is the tube's index in its video,
    ``label`` the class name, ``start``/``end`` the span ``[first keyframe, last keyframe
    + 1/3 s)``, ``boxes`` one normalised float32 box per keyframe (an Arrow list
    column, as `stvr_data.tubelets` holds them). A tube too short to hold one clip's
    middle frame gives no tubelet (compare the row count with `count_tubes`).
    """
    rows, boxes = [], []
    interval = manifest.CLIP_FRAMES / clip_fps
    for video_id in sorted(videos):
        entry = videos[video_id]
        height, width = entry.get("resolution", FRAME_SIZE[::-1])
        for index, tube in enumerate(entry["annotations"]):
            sf = int(tube["sf"])
            k, frames = clip_keyframes(sf, int(tube["ef"]), int(entry["numf"]),
                                       clip_fps=clip_fps, source_fps=source_fps)
            if len(k) == 0:
                continue
            boxes.append(normalised_boxes(np.asarray(tube["boxes"])[frames - sf], width=width, height=height))
            rows.append((video_id, index, classes[int(tube["label"])],
                         float(k[0]) * interval, float(k[-1] + 1) * interval))
    frame = pd.DataFrame(rows, columns=["video_id", "person_id", "label", "start", "end"])
    frame = frame.astype({"person_id": "int32", "start": "float64", "end": "float64"})
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in boxes], dtype=np.int64)])
    values = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    frame["boxes"] = boxes_series(values.astype(np.float32), offsets, index=frame.index)
    return frame


def count_tubes(videos: dict) -> int:
    return sum(len(entry["annotations"]) for entry in videos.values())


def split_classes(classes=CLASSES, *, seed: int, sizes: dict | None = None) -> dict[str, tuple[str, ...]]:
    """Seeded disjoint train/val/test class split (paper §5: 14 / 5 / 5)."""
    sizes = dict(sizes or CLASS_SPLIT_SIZES)
    if sum(sizes.values()) > len(classes):
        raise ValueError(f"class split {sizes} needs more than the {len(classes)} classes")
    order = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    split, begin = {}, 0
    for name in SPLITS:
        split[name] = tuple(sorted(order[begin:begin + sizes[name]]))
        begin += sizes[name]
    return split


def read_class_split(path: str | os.PathLike, classes=CLASSES) -> dict[str, tuple[str, ...]]:
    """A class split from JSON ``{"train": [...], "val": [...], "test": [...]}`` (class
    names); classes listed nowhere are left out of the benchmark."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or set(data) != set(SPLITS):
        raise AnnotationError(path, None, 'expected an object with exactly the keys "train", "val", "test"')
    split, seen = {}, {}
    for name in SPLITS:
        if not isinstance(data[name], list) or not data[name]:
            raise AnnotationError(path, None, f"'{name}': expected a non-empty list of class names")
        for cls in data[name]:
            if cls not in classes:
                raise AnnotationError(path, None, f"'{name}': unknown class '{cls}'")
            if cls in seen:
                raise AnnotationError(path, None, f"class '{cls}' is in both '{seen[cls]}' and '{name}'")
            seen[cls] = name
        split[name] = tuple(sorted(data[name]))
    return split


def read_split_list(path: str | os.PathLike) -> frozenset[str]:
    """Video ids of a UCF101 split list (``testlist01.txt``: ``Class/v_name[.avi] [index]``)."""
    path = Path(path)
    ids = set()
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        ids.add(check_video_id(line.split()[0].removesuffix(".avi"), path, number))
    return frozenset(ids)


def assign_splits(tubelets: pd.DataFrame, class_split: dict, test_videos=None) -> pd.DataFrame:
    """Give each tubelet its class's split; with a video split, keep training-class
    tubelets of training videos and val/test-class tubelets of test videos only."""
    of_class = {cls: name for name, members in class_split.items() for cls in members}
    out = tubelets.assign(split=tubelets.label.map(of_class))
    out = out[out.split.notna()]
    if test_videos is not None:
        in_test = out.video_id.isin(test_videos)
        out = out[(out.split == "train") != in_test]
    return out.reset_index(drop=True)


def videos_table(videos: dict, tubelets: pd.DataFrame, test_videos=None) -> pd.DataFrame:
    """The `Corpus` videos: those holding a kept tubelet, their subset and time bounds.

    ``clip_end`` is the end of the video's last whole 24-fps clip, not ``numf / 25``:
    references are padded up to it and must stay on the 1/3 s keyframe grid.
    """
    ids = sorted(set(tubelets.video_id))
    whole_clips = [(int(videos[v]["numf"]) * manifest.CLIP_FPS) // (manifest.CLIP_FRAMES * SOURCE_FPS)
                   for v in ids]
    if test_videos is None:
        subset = ["unsplit"] * len(ids)  # no video-level split was given
    else:
        subset = ["test" if v in test_videos else "train" for v in ids]
    return pd.DataFrame({
        "video_id": ids, "subset": subset, "source_file": [f"{v}.avi" for v in ids],
        "clip_start": 0.0, "clip_end": [n * KEYFRAME_INTERVAL for n in whole_clips]})


# Every UCF101 video is far shorter than this; the media step clamps the cut to the
# video's end, so each clip file holds the whole video on the 24-fps grid.
MEDIA_SPAN = (0.0, 3600.0)
# The official padding rule is stated in seconds (targets under 10 s get their own
# length of background each side); BuildOptions counts keyframes, 3 per second here.
PAD_BELOW_SECONDS = 10.0


def check_videos_source(videos: str | None) -> None:
    """Refuse the UCF101 archive itself: RAR cannot be read here, it must be extracted."""
    if videos is not None and str(videos).lower().rstrip("/").endswith(".rar"):
        raise MediaError(
            f"{videos}: UCF101.rar is a RAR archive, which this tool cannot read; extract it "
            "first (unrar x UCF101.rar, or 7z x UCF101.rar) and pass the extracted UCF-101 "
            "folder (holding <Class>/v_<Class>_gXX_cYY.avi) as --videos")


def prepare_ucf(annotations: str | os.PathLike, videos: str | None, out: str | os.PathLike, *,
                options: BuildOptions, split_list=None, class_split=None,
                use_video_split: bool = True) -> dict:
    """Build the UCF101-24 re-localization benchmark into `out`; returns its dataset card.

    `annotations`: any file `read_annotations` accepts. `videos`: the extracted UCF-101
    folder or an http(s) base URL (None with ``options.skip_media``). `split_list`: a
    ``testlist01.txt`` (default: the split the annotation file carries, if any).
    `class_split`: a JSON file (default: `split_classes` with ``options.seed``).
    `use_video_split=False` keeps every tube of a class whatever its video's subset.
    ``options.pad_below`` is replaced by `PAD_BELOW_SECONDS` in 1/3 s keyframes (30).
    """
    check_videos_source(videos)
    ann = read_annotations(annotations)
    test_videos = read_split_list(split_list) if split_list is not None else ann.test_videos
    classes = (read_class_split(class_split, ann.classes) if class_split is not None
               else split_classes(ann.classes, seed=options.seed))
    every = tubes_to_tubelets(ann.videos, classes=ann.classes)
    tubelets = assign_splits(every, classes, test_videos if use_video_split else None)
    corpus = Corpus(
        name="UCF101-24", tubelets=tubelets, videos=videos_table(ann.videos, tubelets, test_videos),
        keyframe_interval=KEYFRAME_INTERVAL, media_span=MEDIA_SPAN,
        card=_card(ann, test_videos, split_list, len(every), use_video_split),
        input_hashes=_input_hashes(annotations, split_list, class_split))
    options = dataclasses.replace(options, pad_below=round(PAD_BELOW_SECONDS / KEYFRAME_INTERVAL))
    extra = {"class_split": {k: list(v) for k, v in classes.items()},
             "video_split": "split list" if split_list is not None else ("annotation file" if test_videos else "none"),
             "use_video_split": use_video_split}
    return build_benchmark(corpus, videos, out, options, extra_options=extra)


def _card(ann: UcfAnnotations, test_videos, split_list, converted: int,
          use_video_split: bool) -> dict:
    tubes = count_tubes(ann.videos)
    return {
        "source": "UCF101-24 (corrected annotations)",
        "annotations": {"file": Path(ann.path).name, "format": ann.format,
                        "videos": len(ann.videos), "tubes": tubes,
                        "tubes_without_keyframe": tubes - converted},
        "video_split": {"file": Path(split_list).name if split_list is not None else None,
                        "test_videos": len(test_videos) if test_videos is not None else None,
                        "used": use_video_split and test_videos is not None},
        "classes": list(ann.classes),
        "conventions": "boxes [x, y, w, h] 1-based pixels -> normalised [x1, y1, x2, y2]; "
                       "one keyframe per 24-fps 8-frame clip (1/3 s) with the box of the "
                       "25-fps frame at the clip's middle",
    }


def _input_hashes(*paths) -> dict:
    return {Path(p).name: manifest.sha256_file(p) for p in paths if p is not None}
