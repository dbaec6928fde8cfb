import numpy as np
import pytest
import torch

from stvr_data import manifest
from stvr_model.data import MATCHING_ACTOR, DataConfig, PairDataset, clip_times, collate


def test_clip_times_tile_the_span_at_one_third_second():
    times = clip_times(902.0, 904.0)
    assert len(times) == 6
    np.testing.assert_allclose(times, 902 + np.arange(6) / 3)


def test_test_sample_shapes_and_targets_follow_groundtruth(tiny_benchmark):
    data = PairDataset(tiny_benchmark, "test", DataConfig(reference_seconds=None, hflip=False, max_query_seconds=1e6,
                                                          query_clips_per_second=1), training=False)
    sample = data[0]
    pair = data.fixed.iloc[0]
    tr = int(round((pair.ref_end - pair.ref_start) * 3))
    assert sample["reference"].shape == (tr, 8, 64, 64, 3) and sample["reference"].dtype == torch.uint8
    assert sample["query"].shape[1:] == (8, 64, 64, 3) and sample["query"].dtype == torch.uint8
    assert sample["query"].shape[0] == len(pair.query_boxes)  # one clip per query second
    truth = manifest.read_benchmark_table(tiny_benchmark, "groundtruth_test")
    truth = truth[(truth.pair_id == pair.pair_id) & truth.x1.notna()]
    for k, time in enumerate(sample["times"].numpy()):
        expected = truth[np.isclose(truth.timestamp, time)][["x1", "y1", "x2", "y2"]].to_numpy() * 64
        target = sample["targets"][k]
        got = target["boxes"][target["labels"] == MATCHING_ACTOR].numpy()
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(expected, axis=0), atol=1e-4)


def test_training_samples_are_fixed_by_seed_epoch_and_index(tiny_benchmark):
    config = DataConfig(reference_seconds=2.0, query_clips_per_second=1, max_query_seconds=3)
    a = PairDataset(tiny_benchmark, "train", config, seed=5)
    b = PairDataset(tiny_benchmark, "train", config, seed=5)
    index = len(a) + 1  # second epoch
    first, second = a[index], b[index]
    assert first["pair_id"] == second["pair_id"]
    assert torch.equal(first["reference"], second["reference"])
    assert first["reference"].shape[0] == 6  # 2 s of 8-frame clips
    assert first["query"].shape[0] <= 3
    epochs = {a[i]["pair_id"] for i in range(len(a))}
    assert len(epochs) == len(a)  # an epoch visits every drawn pair once


def test_flip_mirrors_frames_and_boxes(tiny_benchmark):
    plain = PairDataset(tiny_benchmark, "train", DataConfig(hflip=False, query_clips_per_second=1), seed=1)
    flipping = PairDataset(tiny_benchmark, "train", DataConfig(hflip=True, query_clips_per_second=1), seed=1)
    for index in range(len(plain)):
        a, b = plain[index], flipping[index]
        if not torch.equal(a["reference"], b["reference"]):
            break
    else:
        pytest.fail("no sample was flipped")
    assert torch.equal(a["reference"].flip(-2), b["reference"])  # [Tr, 8, H, W, 3]: W is -2
    np.testing.assert_allclose(b["query_boxes"][:, 0].numpy(), 64 - a["query_boxes"][:, 2].numpy(), atol=1e-5)


def test_collate_pads_queries_with_a_mask(tiny_benchmark):
    data = PairDataset(tiny_benchmark, "train", DataConfig(query_clips_per_second=1), seed=0)
    samples = [data[i] for i in range(3)]
    batch = collate(samples)
    longest = max(s["query"].shape[0] for s in samples)
    assert batch["query"].shape[:2] == (3, longest)
    assert batch["query_valid"].sum(1).tolist() == [s["query"].shape[0] for s in samples]
    assert batch["reference"].shape[:2] == (3, 6)


def test_shuffled_queries_keep_the_reference_and_its_targets(tiny_benchmark):
    plain = PairDataset(tiny_benchmark, "test", DataConfig(max_query_seconds=2), training=False)
    if plain.fixed.label.nunique() < 2:  # the tiny benchmark holds out one test label
        with pytest.raises(Exception, match="two combined labels"):
            PairDataset(tiny_benchmark, "test", DataConfig(max_query_seconds=2), training=False,
                        shuffle_queries=0)
    shuffled = PairDataset(tiny_benchmark, "test", DataConfig(max_query_seconds=2), training=False)
    shuffled.query_source = np.roll(np.arange(len(plain)), 1)  # pair i takes pair i-1's query
    for index in range(min(3, len(plain))):
        got, own, donor = shuffled[index], plain[index], plain[(index - 1) % len(plain)]
        assert torch.equal(got["reference"], own["reference"]) and got["pair_id"] == own["pair_id"]
        assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(got["targets"], own["targets"], strict=True))
        assert torch.equal(got["query"], donor["query"]) and torch.equal(got["query_boxes"], donor["query_boxes"])


def test_a_fixed_split_can_be_trained_on_its_first_pairs(tiny_benchmark):
    data = DataConfig(max_query_seconds=2, reference_seconds=1.0)
    fitting = PairDataset(tiny_benchmark, "test", data, training=True, max_pairs=2)
    assert len(fitting) == 2
    ids = {fitting[i]["pair_id"] for i in range(6)}  # indices past one epoch wrap round
    assert ids == set(fitting.fixed.pair_id) and len(fitting[5]["reference"]) == 3  # 1 s windows


def test_action_targets_are_the_multi_hot_atoms_of_each_actors_label(tiny_benchmark):
    from stvr_data.tubelets import atom_vocabulary, label_atoms

    card = manifest.read_dataset_card(tiny_benchmark)
    atoms = atom_vocabulary(card["labels"]["train"])
    data = PairDataset(tiny_benchmark, "train", DataConfig(query_clips_per_second=1, max_query_seconds=3,
                                                           hflip=False), seed=1, action_atoms=atoms)
    pair = data._epoch(0)[0].iloc[0]
    actors = data._epoch(0)[1][pair.pair_id]
    sample = data[0]
    seen = 0
    for target, time in zip(sample["targets"], sample["times"].numpy(), strict=True):
        at_keyframe = actors[np.isclose(actors.timestamp, np.floor(time + 1e-6))]
        assert target["actions"].shape == (len(target["boxes"]), len(atoms))
        for box, hot in zip(target["boxes"].numpy() / 64, target["actions"].numpy(), strict=True):
            row = at_keyframe[np.isclose(at_keyframe[["x1", "y1", "x2", "y2"]].to_numpy(float), box, atol=1e-4).all(1)]
            expected = {atom for atom in label_atoms(row.label.iloc[0]) if atom in atoms}
            assert {atoms[i] for i in np.flatnonzero(hot)} == expected
            seen += 1
    assert seen > 0
    # Without atoms the targets hold boxes and labels only.
    assert set(PairDataset(tiny_benchmark, "train", DataConfig(), seed=1)[0]["targets"][0]) == {"boxes", "labels"}


def test_atom_vocabulary_orders_ids_numerically_and_names_after():
    from stvr_data.tubelets import atom_vocabulary

    assert atom_vocabulary(["5+17+80", "12+17", "Basketball"]) == ("5", "12", "17", "80", "Basketball")


def test_query_swap_takes_another_labels_query_and_moves_the_matching_targets(tiny_benchmark):
    config = DataConfig(query_clips_per_second=1, max_query_seconds=3, hflip=False)
    plain = PairDataset(tiny_benchmark, "train", config, seed=2)
    swapped = PairDataset(tiny_benchmark, "train", DataConfig(**{**config.__dict__, "query_swap": 1.0}), seed=2)
    changed = 0
    for index in range(min(len(plain), 6)):
        a, b = plain[index], swapped[index]
        assert torch.equal(a["reference"], b["reference"])  # the reference stays
        if a["query"].shape == b["query"].shape and torch.equal(a["query"], b["query"]):
            continue  # the reference shows no other label with a donor: the pair's own query
        changed += 1
        matching_a = [t["boxes"][t["labels"] == MATCHING_ACTOR] for t in a["targets"]]
        matching_b = [t["boxes"][t["labels"] == MATCHING_ACTOR] for t in b["targets"]]
        assert any(not torch.equal(x, y) for x, y in zip(matching_a, matching_b, strict=True))
    assert changed > 0


def _float_clips(clips: torch.Tensor) -> torch.Tensor:
    """The float conversion the dataset's workers used to make, written out:
    uint8 [T, 8, H, W, 3] -> float32 [T, 3, 8, H, W] in [-1, 1]."""
    return clips.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)


def _float_batch(samples: list[dict]) -> dict:
    """The batch `collate` used to make of float samples (queries padded with zeros)."""
    floats = [{**s, "query": _float_clips(s["query"]), "reference": _float_clips(s["reference"])} for s in samples]
    longest = max(len(s["query"]) for s in floats)
    query = torch.zeros((len(floats), longest, *floats[0]["query"].shape[1:]))
    for i, sample in enumerate(floats):
        query[i, :len(sample["query"])] = sample["query"]
    return {**collate(samples), "query": query, "reference": torch.stack([s["reference"] for s in floats])}


def test_every_byte_becomes_the_float_a_conversion_in_the_worker_gave():
    from stvr_model.data import PIXEL_VALUES, clips_to_model

    every_byte = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256, 1).expand(2, 8, 1, 256, 3)
    assert torch.equal(clips_to_model(every_byte, "cpu"), _float_clips(every_byte))
    # the table other devices look the values up in holds the same bits
    assert torch.equal(PIXEL_VALUES[every_byte.int()].permute(0, 4, 1, 2, 3), _float_clips(every_byte))


def test_a_batch_reaches_the_model_as_the_float_batch_the_workers_used_to_send(tiny_benchmark):
    from stvr_model.cells import CellConfig
    from stvr_model.checkpoint import build_model
    from stvr_model.config import ModelConfig
    from stvr_model.data import batch_to_model
    from stvr_model.detector import DetectorConfig
    from stvr_model.inference import model_inputs

    data = PairDataset(tiny_benchmark, "train", DataConfig(query_clips_per_second=1), seed=0)
    samples = [data[i] for i in range(3)]  # queries of different lengths: padded in the batch
    assert len({len(s["query"]) for s in samples}) > 1
    new, old = batch_to_model(collate(samples), "cpu"), _float_batch(samples)
    assert torch.equal(new["reference"], old["reference"]) and new["reference"].stride() == old["reference"].stride()
    valid = old["query_valid"]
    assert torch.equal(new["query"][valid], old["query"][valid]) and new["query"].is_contiguous()
    # padding clips (-1 now, 0 before) never reach the backbone: same detections and losses
    torch.manual_seed(0)
    spec = ModelConfig(backbone="small", cell=CellConfig(kind="convlstm"),
                       detector=DetectorConfig(image_size=(64, 64), box_head_blocks=1, box_head_width=16))
    model = build_model(spec)
    outputs = []
    for batch in (new, old):
        torch.manual_seed(1)  # training samples anchors and proposals
        _, losses = model.train()(**model_inputs(batch, spec), targets=batch["targets"])
        detections, _ = model.eval()(**model_inputs(batch, spec))
        outputs.append((losses, detections))
    (losses, detections), (old_losses, old_detections) = outputs
    assert all(torch.equal(losses[k], old_losses[k]) for k in old_losses)
    assert all(torch.equal(a[k], b[k]) for row, old_row in zip(detections, old_detections, strict=True)
               for a, b in zip(row, old_row, strict=True) for k in b)


def test_clips_to_model_refuses_clips_already_converted():
    from stvr_model.data import clips_to_model
    from stvr_model.errors import ModelError

    with pytest.raises(ModelError, match="must be uint8"):
        clips_to_model(torch.zeros(1, 8, 4, 4, 3), "cpu")


def test_clips_are_read_in_runs_of_consecutive_clips_and_kept_within_the_cache(tiny_benchmark, monkeypatch):
    from stvr_data.media import read_frames
    from stvr_model import data as data_module
    from stvr_model.data import ClipReader

    videos = manifest.read_benchmark_table(tiny_benchmark, "videos")
    video = videos[videos.status == "ok"].iloc[0]
    start = float(video.clip_start) + 1
    times = np.concatenate([start + np.arange(7) / 3, start + 4 + np.arange(2) / 3])  # two runs

    def alone(time):  # one clip decoded on its own
        return read_frames(tiny_benchmark / video.clip_path, time, 8, clip_start=float(video.clip_start),
                           fps=int(round(video.fps)))

    reads = []
    monkeypatch.setattr(data_module, "read_frames", lambda *a, **k: reads.append(a[2]) or read_frames(*a, **k))
    reader = ClipReader(tiny_benchmark, videos, cache_seconds=2)  # 6 clips
    got = reader.clips(video.video_id, times)
    assert got.shape == (9, 8, 64, 64, 3)
    assert all(np.array_equal(clip, alone(t)) for clip, t in zip(got, times, strict=True))
    assert reads == [7 * 8, 2 * 8] and len(reader.cache) == 6
    assert np.array_equal(reader.clip(video.video_id, times[-1]), got[-1]) and len(reads) == 2  # from the cache
    reader.clips(video.video_id, times[:1])
    assert reads[2:] == [8]  # evicted: read again


@pytest.mark.gpu
def test_clips_reach_a_cuda_device_as_the_cpu_bits():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from stvr_model.data import clips_to_model

    every_byte = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256, 1).expand(2, 8, 1, 256, 3)
    got = clips_to_model(every_byte.pin_memory(), "cuda")
    assert got.device.type == "cuda" and torch.equal(got.cpu(), clips_to_model(every_byte, "cpu"))
