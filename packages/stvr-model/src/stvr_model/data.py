"""Query/reference pairs as tensors, read from a benchmark directory (paper §6.2).

A benchmark (see `stvr_data.manifest`) stores one 24-fps clip file per video. An *image*
is an 8-frame clip starting at `ref_start + k/3`; a keyframe's boxes hold for the clips it
covers. Each sample gives:

    query          uint8   [Tq, 8, H, W, 3]  RGB frames as decoded
    query_boxes    float32 [Tq, 4]           pixel [x1, y1, x2, y2] of the query actor
    reference      uint8   [Tr, 8, H, W, 3]
    ref_valid      bool    [Tr]              False for zero padding
    times          float64 [Tr]              source time (s) of each reference clip
    targets        Tr dicts {boxes [K, 4] pixel xyxy, labels [K] int64}: 1 other actor,
                   2 matching actor (same combined label as the query)

Clips stay uint8 until they reach the model's device: loader workers hand over a quarter
of the bytes float32 would take, and `batch_to_model` (`clips_to_model` for bare clips)
turns them into the detector's float32 [..., 3, 8, H, W] in [-1, 1] there, once.

Training pairs are re-drawn every epoch from the stored pools (`stvr_data.pairs`);
every random choice (pairs, order, query window, crop, flip) is derived from
`(seed, epoch, index)`, so a resumed run sees exactly the data it would have seen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from stvr_data import manifest, pairs
from stvr_data.errors import ManifestError
from stvr_data.media import read_frames
from stvr_data.tubelets import label_atoms
from stvr_model.errors import ModelError

OTHER_ACTOR, MATCHING_ACTOR = 1, 2
CLIP_SECONDS = 1.0 / manifest.CLIPS_PER_SECOND


@dataclass(frozen=True)
class DataConfig:
    reference_seconds: float | None = 2.0  # None: the whole reference (evaluation)
    max_query_seconds: float = 10.0
    query_clips_per_second: int = 3  # 3 = every clip of the query, as the authors; 1 is cheaper
    hflip: bool = True
    # Training only (also when fitting a fixed split): the share of samples whose query is
    # swapped for a query of another label present in the reference, taken from the same
    # split (targets follow the new label), so that one
    # reference is seen with several queries and only the query tells which actor
    # matches. 0 is the authors' sampling.
    query_swap: float = 0.0
    cache_seconds: int = 512  # seconds of decoded clips kept per loader worker


class ClipReader:
    """Decodes 8-frame clips of the clip files, keeping the most recent in memory.

    Clips asked for together are decoded in runs of consecutive clips, one seek each
    (up to `RUN_CLIPS` at a time). A clip starts on the 1/3 s grid, which is a keyframe
    of the clip files (every 8 frames), so no frame is decoded for nothing."""

    RUN_CLIPS = 30  # 10 s: the longest training query in one read, a long reference in several

    def __init__(self, benchmark: str | Path, videos: pd.DataFrame, cache_seconds: int = 512):
        self.root = Path(benchmark)
        usable = videos[videos.status == "ok"]
        self.videos = {row.video_id: row for row in usable.itertuples()}
        self.cache: OrderedDict = OrderedDict()  # (video_id, first frame) -> uint8 [8, H, W, 3]
        self.capacity = cache_seconds * manifest.CLIPS_PER_SECOND

    def has(self, video_id: str) -> bool:
        return video_id in self.videos

    def clip(self, video_id: str, time: float) -> np.ndarray:
        """uint8 [8, H, W, 3]: the clip starting at source time `time` (on the 1/3 s grid)."""
        return self.clips(video_id, [time])[0]

    def clips(self, video_id: str, times) -> np.ndarray:
        """uint8 [T, 8, H, W, 3]: the clips starting at the source times `times`."""
        firsts = [round(float(t) * manifest.CLIP_FPS) for t in times]
        out = None
        for start in range(0, len(firsts), self.RUN_CLIPS):
            chunk = firsts[start:start + self.RUN_CLIPS]
            missing = [f for f in dict.fromkeys(chunk) if (video_id, f) not in self.cache]
            for run in _consecutive_runs(missing, manifest.CLIP_FRAMES):
                self._read(video_id, run)
            for i, first in enumerate(chunk, start):
                clip = self.cache[(video_id, first)]
                self.cache.move_to_end((video_id, first))
                if out is None:
                    out = np.empty((len(firsts), *clip.shape), np.uint8)
                out[i] = clip
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        return out

    def _read(self, video_id: str, firsts: list[int]) -> None:
        """Decode the consecutive clips starting at frames `firsts` into the cache."""
        video = self.videos.get(video_id)
        if video is None:
            raise ManifestError(f"{self.root}: video '{video_id}' has no usable clip file")
        frames = read_frames(self.root / video.clip_path, firsts[0] / manifest.CLIP_FPS,
                             len(firsts) * manifest.CLIP_FRAMES, clip_start=float(video.clip_start),
                             fps=int(round(video.fps)))
        for k, first in enumerate(firsts):
            self.cache[(video_id, first)] = frames[k * manifest.CLIP_FRAMES:(k + 1) * manifest.CLIP_FRAMES]


def _consecutive_runs(starts: list[int], step: int) -> list[list[int]]:
    """`starts` (ascending) cut into runs where each follows the one before by `step`."""
    runs: list[list[int]] = []
    for start in starts:
        if runs and start == runs[-1][-1] + step:
            runs[-1].append(start)
        else:
            runs.append([start])
    return runs


def clip_times(start: float, end: float) -> np.ndarray:
    """Start times of the 8-frame clips tiling [start, end)."""
    count = int(round((end - start) * manifest.CLIPS_PER_SECOND))
    return start + np.arange(count) / manifest.CLIPS_PER_SECOND


def _keyframe_index(times: np.ndarray, start: float, interval: float) -> np.ndarray:
    return np.floor((times - start) / interval + 1e-6).astype(np.int64)


class PairDataset(Dataset):
    """Fixed val/test pairs, or training pairs re-drawn each epoch.

    For training, index `i` is a global sample number: epoch `i // len(pool)`, position
    `i % len(pool)` in that epoch's shuffled pairs; `len(dataset)` is one epoch.
    """

    def __init__(self, benchmark: str | Path, split: str, config: DataConfig = DataConfig(),
                 *, seed: int = 0, training: bool | None = None, shuffle_queries: int | None = None,
                 max_pairs: int | None = None, action_atoms: tuple[str, ...] = ()):
        self.root = Path(benchmark)
        # With atoms, targets also carry "actions" [K, len(atoms)]: the multi-hot atomic
        # actions of each actor's combined label (the detector's auxiliary action head).
        self.action_atoms = {atom: i for i, atom in enumerate(action_atoms)}
        self.split = split
        self.config = config
        self.seed = seed
        self.training = split == "train" if training is None else training
        card = manifest.read_dataset_card(self.root)
        self.interval = float(card.get("keyframe_interval", 1.0))
        self.per_keyframe = manifest.images_per_keyframe(self.interval)
        videos = manifest.read_benchmark_table(self.root, "videos")
        self.reader = ClipReader(self.root, videos, config.cache_seconds)
        self.size = (int(videos.height.iloc[0]), int(videos.width.iloc[0])) if len(videos) else (0, 0)
        self.tubelets = manifest.read_benchmark_table(self.root, "tubelets")
        self._epochs: OrderedDict = OrderedDict()
        if split == "train":
            pool = self.tubelets[(self.tubelets.split == "train")
                                 & self.tubelets.video_id.map(self.reader.has)]
            self.pool = pool.reset_index(drop=True)
            self.length = len(self._epoch(0)[0])
        else:
            fixed = manifest.read_benchmark_table(self.root, f"pairs_{split}")
            usable = fixed.query_video_id.map(self.reader.has) & fixed.ref_video_id.map(self.reader.has)
            self.fixed = fixed[usable].reset_index(drop=True).iloc[:max_pairs]
            self.actors = self._actors(self.fixed)
            self.length = len(self.fixed)
            # Fitting a fixed split swaps queries among that split's own tubelets.
            self.pool = self.tubelets[(self.tubelets.split == split)
                                      & self.tubelets.video_id.map(self.reader.has)].reset_index(drop=True)
            # Diagnostics: each pair keeps its reference and targets but takes the query of
            # a pair with another combined label (seeded by `shuffle_queries`).
            self.query_source = None if shuffle_queries is None or not self.length else \
                pairs.shuffled_query_sources(self.fixed.label.to_numpy(), shuffle_queries)
        if self.length == 0:
            raise ManifestError(f"{self.root}: no usable {split} pairs (are the clips built?)")

    def __len__(self) -> int:
        return self.length

    def _actors(self, table: pd.DataFrame) -> dict:
        actors = pairs.reference_actors(table, self.tubelets, keyframe_interval=self.interval)
        return {pid: group for pid, group in actors.groupby("pair_id", sort=False)}

    def _epoch(self, epoch: int):
        """(pairs in this epoch's order, actors by pair id), memoised for two epochs."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch])
            per_second = 1.0 / self.interval
            drawn = pairs.draw_train_pairs(
                self.pool, rng, keyframe_interval=self.interval,
                max_query_seconds=max(1, round(self.config.max_query_seconds * per_second)),
                reference_seconds=max(1, round((self.config.reference_seconds or 2.0) * per_second)))
            drawn = drawn.iloc[rng.permutation(len(drawn))].reset_index(drop=True)
            self._epochs[epoch] = (drawn, self._actors(drawn))
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def __getitem__(self, index: int) -> dict:
        if self.split == "train":
            epoch, position = divmod(int(index), self.length)
            table, actors = self._epoch(epoch)
            rng = np.random.default_rng([self.seed, epoch, position, 1])
        elif self.training:  # fitting the fixed pairs themselves (an overfitting check)
            epoch, position = divmod(int(index), self.length)
            table, actors = self.fixed, self.actors
            rng = np.random.default_rng([self.seed, epoch, position, 3])
        else:
            table, actors, position = self.fixed, self.actors, int(index)
            rng = np.random.default_rng([self.seed, position, 2])
        pair = table.iloc[position]
        query_pair, pair_actors = pair, actors.get(pair.pair_id)
        if self.split != "train" and self.query_source is not None:
            query_pair = table.iloc[self.query_source[position]]
        if self.training and pair_actors is not None and rng.random() < self.config.query_swap:
            query_pair, pair_actors = self._swapped_query(pair, pair_actors, rng)
        return self._sample(pair, pair_actors, rng, query_pair)

    def _swapped_query(self, pair, actors: pd.DataFrame, rng: np.random.Generator):
        """(a query of another label seen in the reference, the actors re-marked for it);
        the pair's own query when the reference shows no other label."""
        labels = sorted(set(actors.label) - {pair.label})
        if not labels:
            return pair, actors
        label = labels[int(rng.integers(len(labels)))]
        donors = self.pool[(self.pool.label == label) & (self.pool.video_id != pair.ref_video_id)]
        if not len(donors):
            return pair, actors
        donor = donors.iloc[int(rng.integers(len(donors)))]
        query = pd.Series({"query_video_id": donor.video_id, "query_start": donor.start,
                           "query_boxes": donor.boxes})
        return query, actors.assign(matching=actors.label == label)

    def _sample(self, pair, actors, rng: np.random.Generator, query_pair=None) -> dict:
        flip = bool(self.config.hflip and self.training and rng.random() < 0.5)
        query, query_boxes = self._query(pair if query_pair is None else query_pair, rng)
        times, valid = self._reference_times(pair, rng)
        reference = self._reference_clips(pair.ref_video_id, times, valid)
        targets = self._targets(pair, actors, times, valid)
        height, width = reference.shape[2:4]
        scale = np.array([width, height, width, height], np.float32)
        query_boxes = query_boxes * scale
        for target in targets:
            target["boxes"] = target["boxes"] * scale
        query, reference = clip_tensor(query), clip_tensor(reference)
        if flip:  # torch flips a [T, 8, H, W, 3] clip several times faster than numpy copies one
            query, reference = query.flip(-2), reference.flip(-2)
            query_boxes = _flip_boxes(query_boxes, width)
            for target in targets:
                target["boxes"] = _flip_boxes(target["boxes"], width)
        return {
            "pair_id": pair.pair_id,
            "query": query,
            "query_boxes": torch.from_numpy(np.ascontiguousarray(query_boxes, np.float32)),
            "reference": reference,
            "ref_valid": torch.from_numpy(valid),
            "times": torch.from_numpy(times),
            "targets": [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}
                        for t in targets],
        }

    def _query(self, pair, rng):
        """Query clips and their normalised boxes, at most `max_query_seconds` long."""
        boxes = np.asarray([np.asarray(b, np.float32) for b in pair.query_boxes], np.float32)
        keyframes = pair.query_start + np.arange(len(boxes)) * self.interval
        limit = max(1, int(round(self.config.max_query_seconds / self.interval)))
        if len(keyframes) > limit:
            first = int(rng.integers(0, len(keyframes) - limit + 1)) if self.training \
                else (len(keyframes) - limit) // 2
            keyframes, boxes = keyframes[first:first + limit], boxes[first:first + limit]
        step = max(1, manifest.CLIPS_PER_SECOND // self.config.query_clips_per_second)
        offsets = np.arange(0, self.per_keyframe, step) * CLIP_SECONDS
        times = (keyframes[:, None] + offsets[None, :]).reshape(-1)
        clips = self.reader.clips(pair.query_video_id, times)
        return clips, np.repeat(boxes, len(offsets), axis=0)

    def _reference_times(self, pair, rng):
        times = clip_times(pair.ref_start, pair.ref_end)
        if not self.training or self.config.reference_seconds is None:
            return times, np.ones(len(times), bool)
        count = int(round(self.config.reference_seconds * manifest.CLIPS_PER_SECOND))
        if len(times) >= count:
            first = int(rng.integers(0, len(times) - count + 1))
            return times[first:first + count], np.ones(count, bool)
        valid = np.zeros(count, bool)
        valid[:len(times)] = True
        padded = np.concatenate([times, times[-1] + CLIP_SECONDS * np.arange(1, count - len(times) + 1)])
        return padded, valid

    def _reference_clips(self, video_id, times, valid) -> np.ndarray:
        """uint8 [Tr, 8, H, W, 3]: the reference's clips, black for padding."""
        clips = self.reader.clips(video_id, times)  # a new array, not the reader's cache
        clips[~valid] = 0
        return clips

    def _targets(self, pair, actors, times, valid) -> list[dict]:
        if actors is None:
            actors = pd.DataFrame({"timestamp": [], "x1": [], "y1": [], "x2": [], "y2": [],
                                   "matching": [], "label": []})
        kf = _keyframe_index(actors.timestamp.to_numpy(float), pair.ref_start, self.interval)
        fields = {
            "boxes": actors[["x1", "y1", "x2", "y2"]].to_numpy(np.float32).reshape(-1, 4),
            "labels": np.where(actors.matching.to_numpy(bool), MATCHING_ACTOR, OTHER_ACTOR).astype(np.int64),
        }
        if self.action_atoms:
            fields["actions"] = multi_hot(actors.label, self.action_atoms)
        clip_kf = _keyframe_index(times, pair.ref_start, self.interval)
        out = []
        for index, ok in zip(clip_kf, valid, strict=True):
            chosen = (kf == index) if ok else np.zeros(len(kf), bool)
            out.append({name: value[chosen] for name, value in fields.items()})
        return out


def multi_hot(labels, atoms: dict[str, int]) -> np.ndarray:
    """float32 [K, len(atoms)] for K combined labels: 1 where a label holds the atom
    (`atoms` maps each to its column); atoms outside it (held-out labels' own) are left out."""
    hot = np.zeros((len(labels), len(atoms)), np.float32)
    for row, label in enumerate(labels):
        for atom in label_atoms(label):
            if atom in atoms:
                hot[row, atoms[atom]] = 1.0
    return hot


def _flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    flipped = boxes.copy()
    flipped[..., 0] = width - boxes[..., 2]
    flipped[..., 2] = width - boxes[..., 0]
    return flipped


def clip_tensor(clips: np.ndarray) -> torch.Tensor:
    """uint8 clips [T, 8, H, W, 3] as a uint8 tensor, same layout (no copy when contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(clips, np.uint8))


def _pixel_values(clips: torch.Tensor) -> torch.Tensor:
    """The model's value of each pixel byte v: v / 127.5 - 1 in float32 (the I3D convention)."""
    return clips.float().div_(127.5).sub_(1.0)


# The same values looked up, for devices other than the CPU: a GPU divides by a scalar
# through its reciprocal, which is one unit in the last place off for 111 of the 256
# bytes, so the division is done here, once, and only copied there.
PIXEL_VALUES = _pixel_values(torch.arange(256, dtype=torch.uint8))


def clips_to_model(clips: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 clips [..., 8, H, W, 3] -> float32 [..., 3, 8, H, W] in [-1, 1] on `device`:
    the bytes are moved, then converted there, the same bits on every device. The result
    is a channels-first view of the frames' own layout (no copy)."""
    if clips.dtype != torch.uint8:
        raise ModelError(f"clips must be uint8 [..., 8, H, W, 3] as the dataset gives them, got {clips.dtype}")
    clips = clips.to(device, non_blocking=True)
    values = _pixel_values(clips) if clips.device.type == "cpu" else PIXEL_VALUES.to(clips.device)[clips.int()]
    lead = clips.dim() - 4
    return values.permute(*range(lead), lead + 3, lead, lead + 1, lead + 2)


def batch_to_model(batch: dict, device: torch.device | str) -> dict:
    """A collated batch on `device`, ready for the detector: the clips converted by
    `clips_to_model`, every other tensor (targets included) moved as it is.

    The queries are made contiguous, the references left as views: the layouts the
    detector has always been given (its float results depend on the layout, by about
    1e-5 on the CPU), so a batch gives the same detections and losses as before clips
    were converted here."""
    moved = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    moved["query"] = clips_to_model(batch["query"], device).contiguous()
    moved["reference"] = clips_to_model(batch["reference"], device)
    moved["targets"] = [[{k: v.to(device) for k, v in t.items()} for t in clips] for clips in batch["targets"]]
    return moved


def collate(samples: list[dict]) -> dict:
    """Batch samples: queries zero-padded to the longest with `query_valid` [B, Tq]."""
    longest = max(s["query"].shape[0] for s in samples)
    query = torch.zeros((len(samples), longest, *samples[0]["query"].shape[1:]), dtype=samples[0]["query"].dtype)
    boxes = torch.zeros((len(samples), longest, 4))
    query_valid = torch.zeros((len(samples), longest), dtype=torch.bool)
    for i, sample in enumerate(samples):
        n = sample["query"].shape[0]
        query[i, :n], boxes[i, :n], query_valid[i, :n] = sample["query"], sample["query_boxes"], True
    return {
        "pair_id": [s["pair_id"] for s in samples],
        "query": query, "query_boxes": boxes, "query_valid": query_valid,
        "reference": torch.stack([s["reference"] for s in samples]),
        "ref_valid": torch.stack([s["ref_valid"] for s in samples]),
        "times": torch.stack([s["times"] for s in samples]),
        "targets": [s["targets"] for s in samples],
    }
