"""Query/reference pairs and their ground truth (paper §5; SPEC §1 step 3, §2).

Every tubelet of a val/test label is a query. Its target is another tubelet of the
same label drawn by a seeded generator; the reference is the target's span padded
with background by the official rule (`reference_span`). Unlike the official
release, a target is only accepted when the query's seconds do not overlap its
reference (so the query never lies inside its own reference). Every tubelet of the
query's label inside the reference is ground truth (`groundtruth`, 3 images per
keyframe second, SPEC §2). Training pairs are re-drawn each epoch
(`draw_train_pairs`, after the authors' ``train_generator``).

Times are seconds on the source video; a keyframe ``t`` covers ``[t, t + interval)``;
reference spans are ``[ref_start, ref_end)``. Boxes are normalised
``[x1, y1, x2, y2]``. Tubelet frames need a ``tubelet_id`` column
(`stvr_data.tubelets.assign_ids`) and, to select a split, a ``split`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stvr_data.ava import AVA_SEGMENT
from stvr_data.errors import StvrDataError
from stvr_data.manifest import GROUNDTRUTH_SCHEMA, PAIRS_SCHEMA
from stvr_data.tubelets import (
    BOX_COLUMNS,
    boxes_arrow,
    boxes_series,
    boxes_values,
    explode,
    keyframe_index,
    take_strings,
)


def reference_span(target_start, target_end, lo, hi, *, keyframe_interval: float = 1.0,
                   pad_below: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The official reference span around a target: ``(ref_start, ref_end)`` arrays.

    Inputs are arrays (or scalars) of seconds: the target's span ``[start, end)`` and
    the video's usable ``[lo, hi]``. A target of ``n < pad_below`` keyframes gets ``n``
    keyframes of background on each side, clamped to ``[lo, hi]``; a longer one is its
    own span. Example (AVA): target [1000, 1003) (3 keyframes) -> (997, 1006).
    """
    start = np.asarray(target_start, dtype=np.float64)
    end = np.asarray(target_end, dtype=np.float64)
    length = keyframe_index(end, keyframe_interval) - keyframe_index(start, keyframe_interval)
    pad = np.where(length < pad_below, length * keyframe_interval, 0.0)
    ref_start = np.maximum(start - pad, np.asarray(lo, dtype=np.float64))
    ref_end = np.minimum(end + pad, np.asarray(hi, dtype=np.float64))
    return np.minimum(ref_start, start), np.maximum(ref_end, end)


def video_bounds(video_ids, bounds=None) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` seconds per entry of `video_ids`.

    `bounds` is None (AVA's 900-1800 s for every video), a dict ``video_id -> (lo,
    hi)`` or a DataFrame with columns ``video_id, lo, hi``. A video without bounds
    raises `StvrDataError`.
    """
    video_ids = np.asarray(video_ids, dtype=object)
    if bounds is None:
        return (np.full(len(video_ids), AVA_SEGMENT[0]), np.full(len(video_ids), AVA_SEGMENT[1]))
    if isinstance(bounds, dict):
        bounds = pd.DataFrame([(v, lo, hi) for v, (lo, hi) in bounds.items()],
                              columns=["video_id", "lo", "hi"])
    table = bounds.set_index("video_id")[["lo", "hi"]]
    found = pd.Index(table.index).get_indexer(video_ids)
    if (found < 0).any():
        raise StvrDataError(f"no time bounds for video {video_ids[found < 0][0]}")
    return (table["lo"].to_numpy(np.float64)[found], table["hi"].to_numpy(np.float64)[found])


def split_tubelets(tubelets: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Tubelets of one split (all when `split` is None or there is no split column),
    in ``tubelet_id`` order."""
    if "tubelet_id" not in tubelets.columns:
        raise StvrDataError("tubelets need a tubelet_id column (see tubelets.assign_ids)")
    if split is not None and "split" in tubelets.columns:
        tubelets = tubelets[(tubelets["split"] == split).to_numpy()]
    return tubelets.sort_values("tubelet_id", kind="stable").reset_index(drop=True)


def _pair_ids(split: str, count: int) -> pa.Array:
    numbers = pc.utf8_lpad(pc.cast(pa.array(np.arange(count)), pa.string()), 5, "0")
    return pc.binary_join_element_wise(pa.scalar(f"{split}-"), numbers, "")


def _group_positions(codes: np.ndarray, *keys: np.ndarray):
    """Stable sort by (codes, *keys): order, position of each row, group start and size."""
    order = np.lexsort((np.arange(len(codes)), *reversed(keys), codes))
    position = np.empty(len(codes), dtype=np.int64)
    position[order] = np.arange(len(codes))
    sorted_codes = codes[order]
    first = np.searchsorted(sorted_codes, codes, side="left")
    size = np.searchsorted(sorted_codes, codes, side="right") - first
    return order, position, first, size


def _in_block_candidates(block_first, block_size, order, query_start, query_stop, ref_start, ref_end):
    """Every (query, candidate) pair of one label and video with its validity.

    Quadratic in the tubelets of one label in one video, which stays small for
    AVA-like data (hundreds at most). A candidate is valid when it is not the query
    and its reference ``[ref_start, ref_end)`` does not overlap the query's seconds
    ``[query_start, query_stop)``.
    """
    query = np.repeat(np.arange(len(block_first)), block_size)
    first = np.cumsum(block_size) - block_size
    slot = np.repeat(block_first, block_size) + np.arange(len(query)) - np.repeat(first, block_size)
    candidate = order[slot]
    overlap = (query_start[query] < ref_end[candidate]) & (query_stop[query] > ref_start[candidate])
    valid = (candidate != query) & ~overlap
    return query[valid], candidate[valid]


def choose_targets(tubelets: pd.DataFrame, ref_start: np.ndarray, ref_end: np.ndarray,
                   u: np.ndarray, *, keyframe_interval: float = 1.0) -> np.ndarray:
    """For each tubelet (a query), the row of its target, or -1 when none is valid.

    A target is another tubelet with the same label whose reference span
    ``[ref_start, ref_end)`` (per candidate row) does not overlap the query's
    seconds in the same video. With `u` uniform in [0, 1) per query, the target is
    valid candidate number ``floor(u * count)`` in (label, video, start) order.
    """
    label = pd.factorize(tubelets["label"])[0]
    video = pd.factorize(tubelets["video_id"], sort=True)[0].astype(np.int64)
    start = tubelets["start"].to_numpy(np.float64)
    stop = tubelets["end"].to_numpy(np.float64)
    order, _, group_first, group_size = _group_positions(label, video, start)
    block = label.astype(np.int64) * (video.max(initial=0) + 1) + video
    sorted_block = block[order]
    block_first = np.searchsorted(sorted_block, block, side="left")
    block_last = np.searchsorted(sorted_block, block, side="right")
    pair_query, pair_target = _in_block_candidates(
        block_first, block_last - block_first, order, start, stop, ref_start, ref_end)
    in_block = np.bincount(pair_query, minlength=len(label))
    before = block_first - group_first
    after = group_first + group_size - block_last
    count = before + in_block + after
    pick = np.minimum(np.floor(u * count).astype(np.int64), np.maximum(count - 1, 0))
    target = np.full(len(label), -1, dtype=np.int64)
    early = (pick < before) & (count > 0)
    target[early] = order[(group_first + pick)[early]]
    inside = (pick >= before) & (pick < before + in_block)
    slot = np.searchsorted(pair_query, np.flatnonzero(inside)) + (pick - before)[inside]
    target[inside] = pair_target[slot]
    late = (pick >= before + in_block) & (count > 0)
    target[late] = order[(block_last + pick - before - in_block)[late]]
    return target


def make_pairs(tubelets: pd.DataFrame, *, split: str, seed: int, bounds=None,
               keyframe_interval: float = 1.0, pad_below: int = 10) -> pd.DataFrame:
    """Fixed query/reference pairs of one split, with the columns of `PAIRS_SCHEMA`.

    Every tubelet of `split` (in ``tubelet_id`` order) is a query; its target is
    drawn by ``numpy.random.default_rng(seed)`` among the other tubelets of its
    label (`choose_targets`); the reference is `reference_span` of the target
    within the video's `bounds` (see `video_bounds`; default AVA's 900-1800 s).
    Queries without a valid target are dropped; their number is in
    ``frame.attrs['queries_without_target']``. ``pair_id`` is
    ``'<split>-<index:05d>'`` over the kept queries. Same inputs -> same frame.
    """
    table = split_tubelets(tubelets, split)
    lo, hi = video_bounds(table["video_id"].to_numpy(), bounds)
    ref_start, ref_end = reference_span(table["start"].to_numpy(), table["end"].to_numpy(), lo, hi,
                                        keyframe_interval=keyframe_interval, pad_below=pad_below)
    u = np.random.default_rng(seed).random(len(table))
    target = choose_targets(table, ref_start, ref_end, u, keyframe_interval=keyframe_interval)
    query = np.flatnonzero(target >= 0)
    target = target[query]
    ids = table["tubelet_id"].to_numpy(np.int64)
    boxes = boxes_arrow(table["boxes"])
    frame = pd.DataFrame({
        "pair_id": _pair_ids(split, len(query)).to_pandas().astype(str),
        "split": split,
        "label": take_strings(table["label"], query),
        "query_tubelet_id": ids[query],
        "query_video_id": take_strings(table["video_id"], query),
        "query_start": table["start"].to_numpy(np.float64)[query],
        "query_end": table["end"].to_numpy(np.float64)[query],
        "query_boxes": pd.Series(boxes.take(pa.array(query)), dtype=pd.ArrowDtype(boxes.type)),
        "ref_video_id": take_strings(table["video_id"], target),
        "ref_start": ref_start[target],
        "ref_end": ref_end[target],
        "target_tubelet_id": ids[target],
    })[PAIRS_SCHEMA.names]
    frame.attrs["queries_without_target"] = int(len(table) - len(query))
    return frame


def _reference_keyframes(pairs: pd.DataFrame, keyframe_interval: float, per_keyframe: int):
    """Rows ``(pair, step)`` for every image of every reference, `per_keyframe` images
    per keyframe: ``pair`` row position, ``step`` image number, ``keyframe`` the
    integer keyframe the image falls in."""
    first = keyframe_index(pairs["ref_start"].to_numpy(), keyframe_interval)
    count = (keyframe_index(pairs["ref_end"].to_numpy(), keyframe_interval) - first) * per_keyframe
    pair = np.repeat(np.arange(len(pairs)), count)
    step = np.arange(len(pair)) - np.repeat(np.cumsum(count) - count, count)
    return pair, step, first[pair] + step // per_keyframe


def _seconds_table(tubelets: pd.DataFrame, keyframe_interval: float, labels=None) -> pd.DataFrame:
    """Per-keyframe tubelet boxes keyed by ``video_id`` and integer ``keyframe``."""
    if labels is not None:
        tubelets = tubelets[tubelets["label"].isin(list(labels)).to_numpy()]
    seconds = explode(tubelets.reset_index(drop=True), keyframe_interval=keyframe_interval)
    return seconds.assign(keyframe=keyframe_index(seconds["timestamp"].to_numpy(), keyframe_interval))


def groundtruth(pairs: pd.DataFrame, tubelets: pd.DataFrame, *, keyframe_interval: float = 1.0,
                clips_per_second: int = 3) -> pd.DataFrame:
    """Scorer ground truth of `pairs`, with the columns of `GROUNDTRUTH_SCHEMA`.

    Every reference ``[ref_start, ref_end)`` has `clips_per_second` images per
    keyframe, at ``ref_start + k * interval / clips_per_second``. Each tubelet of the
    pair's label in the reference video adds one row per image: its box at the
    keyframe the image falls in (the official ``compute_ap.py`` rule). An image
    without any such box gets one row with a missing box (NaN here, null in the file). Rows are in pair order, then
    image time, then tubelet order.
    """
    pair, step, keyframe = _reference_keyframes(pairs, keyframe_interval, clips_per_second)
    images = pd.DataFrame({
        "pair": pair, "step": step, "keyframe": keyframe,
        "video_id": take_strings(pairs["ref_video_id"], pair),
        "label": take_strings(pairs["label"], pair),
    })
    seconds = _seconds_table(tubelets, keyframe_interval, labels=pairs["label"].unique())
    merged = images.merge(seconds[["video_id", "label", "keyframe", "tubelet", *BOX_COLUMNS]],
                          on=["video_id", "label", "keyframe"], how="left")
    merged = merged.sort_values(["pair", "step", "tubelet"], kind="stable", na_position="first")
    pair = merged["pair"].to_numpy()
    time = (pairs["ref_start"].to_numpy(np.float64)[pair]
            + merged["step"].to_numpy() * (keyframe_interval / clips_per_second))
    frame = pd.DataFrame({
        "pair_id": take_strings(pairs["pair_id"], pair),
        "label": merged["label"].astype(str).reset_index(drop=True),
        "timestamp": time,
        **{name: merged[name].to_numpy(np.float32, na_value=np.nan) for name in BOX_COLUMNS},
    })
    return frame[GROUNDTRUTH_SCHEMA.names].reset_index(drop=True)


def actor_images(pairs: pd.DataFrame, tubelets: pd.DataFrame, *, keyframe_interval: float = 1.0,
                 clips_per_second: int = 3) -> pd.DataFrame:
    """Every annotated actor's box on every image of each reference, whatever its label.

    Columns ``pair_id, timestamp`` (the image's clip start, as in `groundtruth`) and
    ``x1, y1, x2, y2``: what a query-blind detector with perfect boxes would report.
    Images without an actor have no row.
    """
    pair, step, keyframe = _reference_keyframes(pairs, keyframe_interval, clips_per_second)
    images = pd.DataFrame({"pair": pair, "step": step, "keyframe": keyframe,
                           "video_id": take_strings(pairs["ref_video_id"], pair)})
    seconds = _seconds_table(tubelets, keyframe_interval)
    merged = images.merge(seconds[["video_id", "keyframe", "tubelet", *BOX_COLUMNS]],
                          on=["video_id", "keyframe"], how="inner")
    merged = merged.sort_values(["pair", "step", "tubelet"], kind="stable")
    pair = merged["pair"].to_numpy()
    return pd.DataFrame({
        "pair_id": take_strings(pairs["pair_id"], pair),
        "timestamp": (pairs["ref_start"].to_numpy(np.float64)[pair]
                      + merged["step"].to_numpy() * (keyframe_interval / clips_per_second)),
        **{name: merged[name].to_numpy(np.float32) for name in BOX_COLUMNS},
    })


def shuffled_query_sources(labels, seed: int) -> np.ndarray:
    """For each pair (its combined label in `labels`), the row of another pair whose
    label differs, drawn uniformly with `seed`: the query it is scored with to check
    that a model uses the query. Raises StvrDataError when every pair has one label."""
    labels = np.asarray(labels, dtype=object)
    if len(set(labels.tolist())) < 2:
        raise StvrDataError("a shuffled-query score needs pairs of at least two combined labels")
    rng = np.random.default_rng([seed, 7])
    sources = np.empty(len(labels), dtype=np.int64)
    for row, label in enumerate(labels):
        others = np.flatnonzero(labels != label)
        sources[row] = others[rng.integers(len(others))]
    return sources


def reference_actors(pairs: pd.DataFrame, tubelets: pd.DataFrame, *,
                     keyframe_interval: float = 1.0) -> pd.DataFrame:
    """Every actor box in each reference, per keyframe, for training targets.

    Columns ``pair_id, timestamp`` (keyframe second), ``x1, y1, x2, y2``,
    ``matching`` (bool: the actor's tubelet has the pair's label) and ``label`` (the
    actor's combined label). Keyframes with
    no actor have no row (pure background). Rows are in pair order, then time,
    then tubelet order.
    """
    pair, step, keyframe = _reference_keyframes(pairs, keyframe_interval, 1)
    frames = pd.DataFrame({
        "pair": pair, "keyframe": keyframe,
        "video_id": take_strings(pairs["ref_video_id"], pair),
    })
    seconds = _seconds_table(tubelets, keyframe_interval)
    merged = frames.merge(seconds[["video_id", "keyframe", "label", "tubelet", *BOX_COLUMNS]],
                          on=["video_id", "keyframe"], how="inner")
    merged = merged.sort_values(["pair", "keyframe", "tubelet"], kind="stable")
    pair = merged["pair"].to_numpy()
    return pd.DataFrame({
        "pair_id": take_strings(pairs["pair_id"], pair),
        "timestamp": merged["keyframe"].to_numpy() * keyframe_interval,
        **{name: merged[name].to_numpy(np.float32) for name in BOX_COLUMNS},
        "matching": merged["label"].to_numpy() == pairs["label"].to_numpy()[pair],
        "label": merged["label"].astype(str).to_numpy(),
    })


def _slice_boxes(boxes: pa.ListArray, rows: np.ndarray, offset: np.ndarray,
                 length: np.ndarray) -> pd.Series:
    """Boxes ``offset .. offset + length - 1`` of each selected row, as a box Series."""
    values, lengths = boxes_values(boxes)
    first = (np.cumsum(lengths) - lengths)[rows] + offset
    ends = np.cumsum(length)
    index = np.repeat(first, length) + np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - length, length)
    return boxes_series(values[index], np.append(0, ends))


def _train_draws(table: pd.DataFrame, rng: np.random.Generator, max_query_seconds: int,
                 reference_seconds: int, keyframe_interval: float) -> dict:
    """Query rows, query windows, target rows and reference windows of one epoch."""
    label = pd.factorize(table["label"])[0]
    order, position, first, size = _group_positions(label)
    u_query, u_target, u_ref = rng.random((3, len(table)))
    query = np.flatnonzero(size >= 2)
    count = (keyframe_index(table["end"].to_numpy(), keyframe_interval)
             - keyframe_index(table["start"].to_numpy(), keyframe_interval))
    q_len = np.minimum(count, max_query_seconds)[query]
    q_off = np.floor(u_query[query] * (count[query] - q_len + 1)).astype(np.int64)
    # Draw among the size - 1 others, skipping the query's own slot.
    pick = np.floor(u_target[query] * (size[query] - 1)).astype(np.int64)
    pick += pick >= position[query] - first[query]
    target = order[first[query] + pick]
    r_len = np.minimum(count[target], reference_seconds)
    r_off = np.floor(u_ref[query] * (count[target] - r_len + 1)).astype(np.int64)
    return dict(query=query, q_off=q_off, q_len=q_len, target=target, r_off=r_off, r_len=r_len)


def draw_train_pairs(tubelets: pd.DataFrame, rng: np.random.Generator, *,
                     max_query_seconds: int = 10, reference_seconds: int = 2,
                     keyframe_interval: float = 1.0) -> pd.DataFrame:
    """One epoch of random training pairs, with the columns of `PAIRS_SCHEMA`.

    Every ``split == 'train'`` tubelet (all tubelets without a split column) whose
    label has another tubelet is a query, cut to a random window of at most
    `max_query_seconds` keyframes. Its target is another tubelet of the same label
    (never the query itself), drawn uniformly; the reference is a random window of
    `reference_seconds` keyframes inside the target (the whole target when shorter),
    ``[ref_start, ref_end)``. All draws come from `rng` (three uniform arrays, one
    value per query each), so the same generator state gives the same frame.
    Pair ids are ``'train-<index:05d>'`` in ``tubelet_id`` order.
    """
    table = split_tubelets(tubelets, "train")
    d = _train_draws(table, rng, max_query_seconds, reference_seconds, keyframe_interval)
    query, target = d["query"], d["target"]
    start = table["start"].to_numpy(np.float64)
    q_start = start[query] + d["q_off"] * keyframe_interval
    ref_start = start[target] + d["r_off"] * keyframe_interval
    ids = table["tubelet_id"].to_numpy(np.int64)
    frame = pd.DataFrame({
        "pair_id": _pair_ids("train", len(query)).to_pandas().astype(str),
        "split": "train",
        "label": take_strings(table["label"], query),
        "query_tubelet_id": ids[query],
        "query_video_id": take_strings(table["video_id"], query),
        "query_start": q_start,
        "query_end": q_start + d["q_len"] * keyframe_interval,
        "query_boxes": _slice_boxes(boxes_arrow(table["boxes"]), query, d["q_off"], d["q_len"]),
        "ref_video_id": take_strings(table["video_id"], target),
        "ref_start": ref_start,
        "ref_end": ref_start + d["r_len"] * keyframe_interval,
        "target_tubelet_id": ids[target],
    })
    return frame[PAIRS_SCHEMA.names]
