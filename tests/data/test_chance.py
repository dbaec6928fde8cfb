"""The chance floor stored in a built benchmark's card (the detector itself: test_pairs.py)."""

from __future__ import annotations


def test_benchmark_card_stores_the_chance_floor(tmp_path):
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions
    from stvr_data.chance import split_chance
    from stvr_data.sample import SampleConfig, make_sample

    make_sample(tmp_path / "sample", seed=3, config=SampleConfig(train_videos=2, val_videos=2), videos=False)
    card = prepare_ava(tmp_path / "sample" / "annotations", None, tmp_path / "bench",
                       options=BuildOptions(seed=0, skip_media=True),
                       min_tubelets=2, num_val_labels=1, num_test_labels=1)
    for split in ("val", "test"):
        stored = card["chance_mAP"][split]
        assert 0.0 < stored["mAP"] <= 1.0
        assert stored == split_chance(tmp_path / "bench", split)

