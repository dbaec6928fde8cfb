"""The detector learns the task: fitted on a few test pairs (two of which share one
reference and differ only in the query), it finds the matching actor on them, and with
the query of the other label it scores clearly lower. Minutes on a CPU: `pytest -m slow`.
"""

from __future__ import annotations

import pytest

from stvr_model.config import ModelConfig, RunConfig, TrainConfig
from stvr_model.data import DataConfig
from stvr_model.detector import DetectorConfig
from stvr_model.evaluate import evaluate
from stvr_model.pretrain import WEIGHTS, PretrainConfig, pretrain
from stvr_model.train import LAST, train

pytestmark = pytest.mark.slow

PAIRS = 4


@pytest.fixture(scope="module")
def demo_benchmark(tmp_path_factory):
    """The demo's sample at 128 px (actors stepping 1.2 cells per clip), split seed 0."""
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions
    from stvr_data.sample import SampleConfig, make_sample
    from stvr_data.scene import SceneConfig

    root = tmp_path_factory.mktemp("demo")
    make_sample(root / "sample", seed=0,
                config=SampleConfig(scene=SceneConfig(motion=1.2, feature_resolution=128)))
    prepare_ava(str(root / "sample" / "annotations"), str(root / "sample" / "videos"), root / "bench",
                options=BuildOptions(seed=0, resolution=(128, 128), workers=2),
                min_tubelets=3, num_val_labels=2, num_test_labels=2)
    return root / "bench"


def test_fitting_four_pairs_finds_the_matching_actor_and_needs_the_query(demo_benchmark, tmp_path):
    pretrain(demo_benchmark, tmp_path / "pre", PretrainConfig(iterations=300), progress=False)
    detector = DetectorConfig(image_size=(128, 128), feature_channels=128,
                              box_head_blocks=1, box_head_width=128, box_head_fc=256, match_product=True,
                              anchor_sizes=(24.0, 32.0, 48.0, 64.0), anchor_aspect_ratios=(1.0, 2.0, 3.0),
                              add_gt_to_proposals=True, action_weight=1.0)
    spec = ModelConfig(backbone="small", detector=detector)  # the warp cell
    config = TrainConfig(iterations=300, batch_size=2, lr=1e-3, optimizer="adam", milestones=(225,),
                         split="test", max_pairs=PAIRS, num_workers=1, device="cpu", checkpoint_every=300)
    data = DataConfig(query_swap=0.5, query_clips_per_second=1, max_query_seconds=3.0)
    train(demo_benchmark, tmp_path / "fit", RunConfig(model=spec, data=data, training=config),
          backbone_weights=str(tmp_path / "pre" / WEIGHTS), progress=False)
    results = evaluate(tmp_path / "fit" / LAST, demo_benchmark, "test", tmp_path / "eval", device="cpu",
                       max_pairs=PAIRS, pictures=0, progress=False)
    score = results["frame_map"]["0.5"]["mAP"]
    wrong = results["shuffled_query_mAP"]["frame_map"]["0.5"]["mAP"]
    assert score >= 0.9, results["frame_map"]
    assert wrong <= score - 0.2, (score, wrong)
