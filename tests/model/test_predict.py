import av
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from stvr_data import manifest
from stvr_data.errors import MediaError
from stvr_data.media import probe_video
from stvr_model.cells import CellConfig
from stvr_model.cli import main
from stvr_model.config import ModelConfig, RunConfig, TrainConfig
from stvr_model.data import DataConfig
from stvr_model.detector import DetectorConfig
from stvr_model.predict import PredictError, Span, best_clips, check_box, predict_pair, query_window
from stvr_model.train import train


def _write_video(path, seconds=4.0, fps=30, size=(80, 60)):
    """A user video unlike the benchmark's clips: 30 fps, 80x60, a square moving right."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(int(seconds * fps)):
            image = np.full((height, width, 3), 90, np.uint8)
            x = 5 + k % (width - 25)
            image[20:45, x:x + 20] = (220, 60, 40)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_benchmark, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict_run")
    spec = ModelConfig(backbone="small", cell=CellConfig(kind="flow"),
                       detector=DetectorConfig(image_size=(64, 64), box_head_blocks=1, box_head_width=16))
    config = TrainConfig(iterations=2, batch_size=1, num_workers=0, device="cpu", checkpoint_every=2)
    data = DataConfig(query_clips_per_second=1, max_query_seconds=2, reference_seconds=1.0)
    train(tiny_benchmark, out, RunConfig(model=spec, data=data, training=config), progress=False)
    return out / "last.pt"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_videos")
    return _write_video(root / "query.avi", seconds=3.0), _write_video(root / "reference.avi")


def test_check_box_normalised_and_pixels():
    assert check_box([0.1, 0.2, 0.5, 0.9]) == pytest.approx((0.1, 0.2, 0.5, 0.9))
    assert check_box([8, 6, 40, 60], pixels=True, width=80, height=60) == pytest.approx((0.1, 0.1, 0.5, 1.0))
    with pytest.raises(PredictError, match="outside the frame.*--pixels"):
        check_box([0.1, 0.2, 1.5, 0.9])
    with pytest.raises(PredictError, match="80x60"):
        check_box([8, 6, 90, 60], pixels=True, width=80, height=60)
    with pytest.raises(PredictError, match="x1 < x2"):
        check_box([0.5, 0.2, 0.5, 0.9])
    with pytest.raises(PredictError, match="four numbers"):
        check_box([0.1, 0.2, 0.3])


def test_query_window_takes_the_middle_at_the_checkpoint_rate():
    times = 10 + np.arange(12) / 3  # a 4 s query
    data = DataConfig(max_query_seconds=2, query_clips_per_second=1)
    assert query_window(times, data).tolist() == [3, 6]
    assert query_window(times, DataConfig(max_query_seconds=10)).tolist() == list(range(12))


def test_best_clips_in_time_order():
    dets = [{"scores": torch.tensor(s)} for s in ([0.1], [], [0.9, 0.2], [0.5], [0.7])]
    assert best_clips(dets, 2).tolist() == [2, 4]
    assert best_clips(dets, 10).tolist() == [0, 1, 2, 3, 4]


def test_predict_writes_detections_on_the_reference_timeline(checkpoint, videos, tmp_path):
    query, reference = videos
    result = CliRunner().invoke(main, [
        "predict", "--checkpoint", str(checkpoint), "--query-video", str(query),
        "--query-box", "8,18,40,50", "--pixels", "--query-start", "0.5", "--query-end", "2.5",
        "--reference-video", str(reference), "--reference-start", "1", "--reference-end", "3",
        "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 query clips, 6 reference clips" in result.output  # 2 s at 1 clip/s; 2 s x 3 clips/s
    csv = pd.read_csv(tmp_path / "detections.csv")
    parquet = manifest.read_table(tmp_path / "detections.parquet", manifest.DETECTIONS_SCHEMA)
    assert list(csv.columns) == ["pair_id", "timestamp", "x1", "y1", "x2", "y2", "score"]
    assert len(csv) == len(parquet) > 0 and set(csv.pair_id) == {"predict"}
    np.testing.assert_allclose(np.unique(csv.timestamp), 1 + np.arange(6) / 3, atol=1e-9)
    boxes = csv[["x1", "y1", "x2", "y2"]].to_numpy()
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0 and (csv.x2 >= csv.x1).all()
    assert csv.score.between(0, 1).all()
    cut = probe_video(tmp_path / "work" / "reference.mp4")
    assert (cut.width, cut.height, cut.fps, cut.num_frames) == (64, 64, 24.0, 48)
    for name in ("overview.png", "best.png"):
        assert (tmp_path / "pictures" / name).stat().st_size > 0


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"query": "missing.mp4"}, MediaError, "no such query video file"),
    ({"reference": "garbage.mp4"}, MediaError, "cannot open video"),
    ({"q_end": 3.5}, PredictError, r"query span \[0.5, 3.5\) s is not inside the video \(0 to 3.00 s\)"),
    ({"r_start": 2.0, "r_end": 2.2}, PredictError, "shorter than one 8-frame clip"),
    ({"box": (0.5, 0.2, 0.1, 0.9)}, PredictError, "x1 < x2"),
])
def test_bad_input_is_one_clear_error(videos, tmp_path, change, error, message):
    query, reference = videos
    (tmp_path / "garbage.mp4").write_bytes(b"not a video")
    paths = {"missing.mp4": tmp_path / "missing.mp4", "garbage.mp4": tmp_path / "garbage.mp4"}
    q = Span(paths.get(change.get("query"), query), 0.5, change.get("q_end", 2.5))
    r = Span(paths.get(change.get("reference"), reference), change.get("r_start", 0.0), change.get("r_end"))
    # the checkpoint is never opened: the inputs are checked first
    with pytest.raises(error, match=message):
        predict_pair(tmp_path / "no.pt", q, change.get("box", (0.1, 0.1, 0.5, 0.9)), r, tmp_path / "out")


def test_cli_reports_a_bad_box_in_one_line(videos, tmp_path):
    query, reference = videos
    result = CliRunner().invoke(main, [
        "predict", "--checkpoint", str(tmp_path / "no.pt"), "--query-video", str(query),
        "--query-box", "0.1,0.1,1.2,0.5", "--query-start", "0", "--query-end", "1",
        "--reference-video", str(reference), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --query-box 0.1,0.1,1.2,0.5: outside the frame, expected normalised [0, 1] "
        "(use --pixels for pixel boxes)"]
