"""Split combined labels into train / val / test (paper §5; SPEC §1, step 2).

The paper picks 54 combined labels with more than 100 tubelets in the 64 AVA
validation videos, 27 for validation and 27 for testing, then removes from the 235
training videos every keyframe second covered by a tubelet of those 54 labels,
splitting the tubelets there (the authors' ``filter_subset``). The remaining
training tubelets form the training labels, so train labels never meet val/test
labels. Labels left with a single tubelet in their split are dropped: no pair can
be formed for them.

The functions are corpus-agnostic: tubelet frames as `stvr_data.tubelets` builds
them, keyframe interval as a parameter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stvr_data.errors import AnnotationError, StvrDataError
from stvr_data.tubelets import combined_label, explode, keyframe_index, label_ids, runs_to_tubelets

SPLITS = ("train", "val", "test")
# The tubelets of the validation videos whose labels are not held out (see `assign_splits`).
CONTEXT = "context"


def sort_labels(labels) -> list[str]:
    """Combined labels in numeric order of their action ids ('1+79' before '11');
    labels that are not action-id lists come after, in string order."""
    return sorted(set(labels), key=_label_key)


def _label_key(label: str):
    if all(part.isdigit() for part in label.split("+")):
        return (0, label_ids(label), "")
    return (1, (), label)


def choose_heldout_labels(val_tubelets: pd.DataFrame, *, min_tubelets: int = 100,
                          num_val: int = 27, num_test: int = 27,
                          seed: int = 0) -> tuple[list[str], list[str]]:
    """Pick the held-out labels: ``(val_labels, test_labels)``, each sorted.

    Eligible are the combined labels with *more than* `min_tubelets` tubelets in
    `val_tubelets` (the validation videos). ``num_val + num_test`` of them are drawn
    without replacement by ``numpy.random.default_rng(seed)`` from the eligible
    labels in sorted order; the first `num_val` drawn are validation labels.
    Too few eligible labels raise `StvrDataError`.
    """
    counts = val_tubelets["label"].value_counts()
    eligible = sort_labels(counts.index[counts.to_numpy() > min_tubelets])
    need = num_val + num_test
    if len(eligible) < need:
        raise StvrDataError(
            f"only {len(eligible)} combined labels have more than {min_tubelets} tubelets in the "
            f"validation videos, {need} are needed ({num_val} val + {num_test} test); "
            "lower --min-tubelets or the number of val/test labels")
    chosen = np.random.default_rng(seed).choice(len(eligible), size=need, replace=False)
    picked = [eligible[i] for i in chosen]
    return sort_labels(picked[:num_val]), sort_labels(picked[num_val:])


def read_split_file(path) -> tuple[list[str], list[str]]:
    """Read the official ``val_test.json`` (``[test_labels, val_labels]``, each a list
    of action-id lists) -> ``(val_labels, test_labels)`` as sorted combined labels.

    A malformed file, a repeated label or a label in both lists raises
    `AnnotationError` naming the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationError(path, None, "file not found") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(path, err.lineno, f"not valid JSON ({err.msg})") from None
    if not (isinstance(data, list) and len(data) == 2
            and all(_is_label_list(part) for part in data)):
        raise AnnotationError(path, None, "expected [test_labels, val_labels], "
                                          "each a list of lists of integer action ids")
    test, val = ([combined_label(ids) for ids in part] for part in data)
    for name, labels in (("test", test), ("val", val)):
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise AnnotationError(path, None, f"{name} label {repeated[0]} listed twice")
    both = sort_labels(set(test) & set(val))
    if both:
        raise AnnotationError(path, None, f"label {both[0]} is both a val and a test label")
    return sort_labels(val), sort_labels(test)


def _is_label_list(part) -> bool:
    return isinstance(part, list) and all(
        isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool)
                                              for i in ids)
        for ids in part)


def remove_heldout_seconds(tubelets: pd.DataFrame, heldout_labels, *,
                           keyframe_interval: float = 1.0) -> pd.DataFrame:
    """Drop the held-out labels' tubelets and every keyframe they cover, for everyone.

    In each video, every keyframe second covered by a tubelet whose label is in
    `heldout_labels` is removed from every other tubelet of that video (whatever
    the person); tubelets are split where a second is removed and vanish when none
    is left. Returns a tubelet frame (extra columns are not kept) in
    ``(video_id, person_id, start)`` order.
    """
    seconds = explode(tubelets, keyframe_interval=keyframe_interval)
    heldout = seconds["label"].isin(list(heldout_labels)).to_numpy()
    frame = keyframe_index(seconds["timestamp"].to_numpy(), keyframe_interval)
    keys = pd.MultiIndex.from_arrays([seconds["video_id"], frame])
    covered = keys.isin(keys[heldout])
    kept = seconds[~covered].reset_index(drop=True)
    # `explode` lists seconds by tubelet then time; linking needs person order.
    order = np.lexsort((kept["timestamp"].to_numpy(), kept["person_id"].to_numpy(),
                        pd.factorize(kept["video_id"], sort=True)[0]))
    kept = kept.iloc[order].reset_index(drop=True)
    return runs_to_tubelets(kept, keyframe_interval=keyframe_interval,
                            run_key=kept["tubelet"].to_numpy())


def drop_single_tubelet_labels(tubelets: pd.DataFrame) -> pd.DataFrame:
    """Rows whose (split, label) has at least two tubelets; order kept."""
    keys = ["split", "label"] if "split" in tubelets.columns else ["label"]
    size = tubelets.groupby(keys, sort=False)["label"].transform("size")
    return tubelets[size.to_numpy() >= 2].reset_index(drop=True)


def assign_splits(train_tubelets: pd.DataFrame, val_tubelets: pd.DataFrame,
                  val_labels, test_labels, *, keyframe_interval: float = 1.0) -> pd.DataFrame:
    """One tubelet table with a ``split`` column (train / val / test / context).

    train: tubelets of `train_tubelets` (training videos) after
    `remove_heldout_seconds` of the val and test labels; val / test: tubelets of
    `val_tubelets` (validation videos) whose label is a val / test label; labels
    with a single tubelet in their split are dropped. context: every other tubelet of
    the validation videos (actors a reference shows that are neither query nor target). Rows are sorted by
    ``(video_id, person_id, start)``; ids are left to `stvr_data.tubelets.assign_ids`.
    Train labels never meet val/test labels: every held-out tubelet is removed from
    the training part by construction.
    """
    val_labels, test_labels = set(val_labels), set(test_labels)
    both = sort_labels(val_labels & test_labels)
    if both:
        raise StvrDataError(f"label {both[0]} is both a val and a test label")
    columns = ["video_id", "person_id", "label", "start", "end", "boxes"]
    train = remove_heldout_seconds(train_tubelets[columns], val_labels | test_labels,
                                   keyframe_interval=keyframe_interval)
    parts = [train.assign(split="train")]
    for split, labels in (("val", val_labels), ("test", test_labels)):
        part = val_tubelets.loc[val_tubelets["label"].isin(list(labels)).to_numpy(), columns]
        parts.append(part.assign(split=split))
    table = drop_single_tubelet_labels(pd.concat(parts, ignore_index=True))
    # Everyone else in the validation videos: never a query or a target, but an actor a
    # detector will see in the references (the chance floor and the evaluation pictures
    # need every annotated actor).
    kept = set(zip(table["video_id"], table["person_id"], table["start"], strict=True))
    others = val_tubelets[columns]
    others = others[[key not in kept for key in zip(others["video_id"], others["person_id"], others["start"],
                                                    strict=True)]]
    table = pd.concat([table, others.assign(split=CONTEXT)], ignore_index=True)
    order = np.lexsort((table["start"].to_numpy(), table["person_id"].to_numpy(),
                        pd.factorize(table["video_id"], sort=True)[0]))
    return table.iloc[order].reset_index(drop=True)
