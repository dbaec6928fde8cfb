"""Pair pictures a reader understands: legend, label with action names, readable tags,
the source's aspect ratio, a score threshold that never hides a best clip's best box."""

import numpy as np
import pytest
import torch

from stvr_data.tubelets import describe_label
from stvr_model import visualize


def test_pixel_aspect_and_visible_boxes():
    assert visualize.pixel_aspect((320, 320), 16 / 9) == pytest.approx(9 / 16)
    assert visualize.pixel_aspect((320, 180), 16 / 9) == pytest.approx(1.0)
    assert visualize.pixel_aspect((320, 320), None) == "equal"
    assert visualize.visible_boxes([[0] * 4] * 3, [0.1, 0.5, 0.2], 0.3) == [1]
    assert visualize.visible_boxes([[0] * 4] * 2, [0.1, 0.2], 0.3) == []
    assert visualize.visible_boxes([[0] * 4] * 2, [0.1, 0.2], 0.3, keep_best=True) == [1]


def test_describe_label_names_every_action():
    names = {"11": "sit", "79": "talk to"}
    assert describe_label("11+79", names) == "11+79 (sit + talk to)"
    assert describe_label("11+80", names) == "11+80"  # an unknown name: the ids alone


def _sample(clips=3, size=32):
    boxes = torch.tensor([[4.0, 4.0, 20.0, 28.0]])
    frames = torch.zeros(clips, 8, size, size, 3, dtype=torch.uint8)
    return {"pair_id": "test-00001", "query": frames,
            "query_boxes": boxes.repeat(clips, 1), "reference": frames,
            "times": torch.arange(clips, dtype=torch.float64) / 3,
            "targets": [{"boxes": boxes, "labels": torch.tensor([2])} for _ in range(clips)]}


@pytest.fixture
def drawn(monkeypatch):
    figures = []
    monkeypatch.setattr(visualize, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def _red_boxes(ax):
    red = np.array([0.8392, 0.1529, 0.1569])  # COLOURS["prediction"]
    return [p for p in ax.patches if np.allclose(p.get_edgecolor()[:3], red, atol=1e-3)]


def test_draw_pair_has_legend_label_aspect_and_threshold(drawn, tmp_path):
    dets = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0], [2.0, 2.0, 12.0, 12.0]]),
             "scores": torch.tensor([0.9, 0.1])} for _ in range(3)]
    visualize.draw_pair(_sample(), dets, tmp_path / "p.png", title="test-00001 (warp)",
                        label="11+79 (sit + talk to)", min_score=0.5, display_aspect=(16 / 9, 4 / 3))
    fig = drawn[0]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["query box", "ground truth (matching actor)", "prediction, score >= 0.5"]
    assert fig._suptitle.get_text() == "test-00001 (warp)\n11+79 (sit + talk to)"
    query_ax, ref_ax = fig.axes[0], fig.axes[4]
    assert query_ax.get_aspect() == pytest.approx(9 / 16) and ref_ax.get_aspect() == pytest.approx(3 / 4)
    assert len(_red_boxes(ref_ax)) == 1  # 0.1 < 0.5: hidden
    tags = [t for t in query_ax.texts if t.get_text() == "query"]
    assert tags and tags[0].get_bbox_patch() is not None and tags[0].get_color() == "white"


def test_best_clips_always_show_their_best_box(drawn, tmp_path):
    dets = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "scores": torch.tensor([0.05])} for _ in range(3)]
    visualize.draw_pair(_sample(), dets, tmp_path / "a.png", min_score=0.3, with_truth=False)
    visualize.draw_pair(_sample(), dets, tmp_path / "b.png", min_score=0.3, keep_best=True, with_truth=False)
    hidden, kept = drawn
    assert len(_red_boxes(hidden.axes[4])) == 0 and len(_red_boxes(kept.axes[4])) == 1
    assert [t.get_text() for t in kept.legends[0].get_texts()] == [
        "query box", "prediction, score >= 0.3 (and each clip's best)"]


def test_draw_pair_writes_a_png(tmp_path):
    path = visualize.draw_pair(_sample(), [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}] * 3,
                               tmp_path / "pictures" / "x.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_figure7_command_draws_the_warped_grid_of_a_trained_warp_cell(tmp_path):
    from click.testing import CliRunner

    from stvr_data import manifest
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions
    from stvr_data.sample import SampleConfig, make_sample
    from stvr_model.cli import main
    from stvr_model.config import ModelConfig, RunConfig, TrainConfig
    from stvr_model.data import DataConfig
    from stvr_model.detector import DetectorConfig
    from stvr_model.train import train

    # 96 px frames give the 6x6 feature maps the warp cell's 3x3 control grid needs.
    make_sample(tmp_path / "sample", seed=3, config=SampleConfig(train_videos=2, val_videos=2))
    bench = tmp_path / "bench"
    prepare_ava(tmp_path / "sample" / "annotations", str(tmp_path / "sample" / "videos"), bench,
                options=BuildOptions(resolution=(96, 96)), min_tubelets=2, num_val_labels=1, num_test_labels=1)
    spec = ModelConfig(backbone="small",  # the warp cell
                       detector=DetectorConfig(image_size=(96, 96), box_head_blocks=1, box_head_width=64))
    config = TrainConfig(iterations=1, batch_size=1, num_workers=0, device="cpu", checkpoint_every=1)
    data = DataConfig(query_clips_per_second=1, max_query_seconds=2, reference_seconds=1.0)
    train(bench, tmp_path / "run", RunConfig(model=spec, data=data, training=config), progress=False)
    pair = manifest.read_benchmark_table(bench, "pairs_test").pair_id.iloc[0]
    args = ["pictures", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--manifest", str(bench),
            "--pair", pair, "--steps", "3", "--out", str(tmp_path / "fig7")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    pictures = sorted((tmp_path / "fig7").glob(f"{pair}_step*.png"))
    assert len(pictures) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pictures)
    missing = CliRunner().invoke(main, [*args[:6], "test-99999", *args[7:]])
    assert missing.exit_code == 2 and "no test pair 'test-99999'" in missing.output


def test_pairs_are_drawn_with_the_decoded_frames(drawn, tmp_path):
    sample = _sample()
    sample["reference"] = torch.randint(0, 256, (3, 8, 32, 32, 3), dtype=torch.uint8)
    visualize.draw_pair(sample, [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}] * 3, tmp_path / "p.png")
    shown = np.asarray(drawn[0].axes[4].get_images()[0].get_array())
    assert np.array_equal(shown, sample["reference"][0, 4].numpy())  # clip 0's middle frame
