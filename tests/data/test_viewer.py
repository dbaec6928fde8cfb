"""`stvr-data view`: the site's data, its previews, and the page in a real headless Chromium."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from stvr_data import manifest, viewer
from stvr_data.cli.main import main
from stvr_data.media import probe_video
from stvr_data.sample import SampleConfig, make_sample

SMALL = ["--min-tubelets", "2", "--num-val-labels", "1", "--num-test-labels", "1"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TRUTH, DETECTION = (0, 255, 0), (255, 0, 255)  # the page's box colours (viewer.js COLOURS)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    make_sample(root / "sample", seed=1, config=SampleConfig(train_videos=2, val_videos=2))
    args = ["build-ava", "--annotations", str(root / "sample" / "annotations"), "--out", str(root / "b"),
            "--videos", str(root / "sample" / "videos"), "--resolution", "64x64", *SMALL]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return root / "b"


def read_data(site):
    text = (site / "data.js").read_text()
    prefix = "window.STVR_DATA = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix):-2])


def target_and_blank(data):
    """A pair with a target, the time (s) of one of its images with a box and of one without."""
    pair = next(p for p in data["pairs"] if p["ref"]["truth"])
    boxed = {row[0] for row in pair["ref"]["truth"]}
    images = round((pair["ref"]["end"] - pair["ref"]["start"]) * 3)
    blank = next(k for k in range(images) if k not in boxed)
    return pair, (min(boxed) + 0.5) / 3, (blank + 0.5) / 3


@pytest.fixture(scope="module")
def site(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    data = viewer.site_data(bench, "test")
    pair, when, _ = target_and_blank(data)
    image = round(when * 3 - 0.5)
    dets = pd.DataFrame({"pair_id": [pair["id"]] * 2, "timestamp": [pair["ref"]["start"] + image / 3] * 2,
                         "x1": [0.1, 0.6], "y1": [0.1, 0.6], "x2": [0.5, 0.9], "y2": [0.5, 0.9],
                         "score": [0.9, 0.3]})
    dets.to_csv(out / "dets.csv", index=False)
    result = CliRunner().invoke(main, ["view", str(bench), "--split", "test", "--detections",
                                       str(out / "dets.csv"), "--out", str(out / "site")])
    assert result.exit_code == 0, result.output
    return out / "site"


def test_choose_pairs_and_names():
    pairs = pd.DataFrame({"pair_id": ["t-2", "t-0", "t-1", "t-3"], "label": ["5", "5", "7+9", "5"]})
    assert viewer.choose_pairs(pairs, 2).pair_id.tolist() == ["t-0", "t-1", "t-2"]  # t-3: third "5"
    assert viewer.label_names(["5", "7+9", "7+10"], {"5": "fall", "7": "a", "9": "b"}) == {
        "5": "fall", "7+9": "a + b", "7+10": ""}
    truth = pd.DataFrame({"pair_id": ["p", "p", "q"], "timestamp": [10.0, 11 + 1 / 3, 3.0],
                          "x1": [0.1, np.nan, 0.2], "y1": 0.1, "x2": 0.5, "y2": 0.5})
    assert viewer.image_rows(truth, {"p": 10.0}, ["x1"]) == {"p": [[0, 0.1]]}


def test_site_holds_every_pair_with_its_boxes_and_previews(bench, site):
    data = read_data(site)
    pairs = manifest.read_benchmark_table(bench, "pairs_test")
    truth = manifest.read_benchmark_table(bench, "groundtruth_test").dropna(subset=["x1"])
    assert [p["id"] for p in data["pairs"]] == sorted(pairs.pair_id)
    card = manifest.read_dataset_card(bench)
    for label, names in data["labels"].items():
        assert names == " + ".join(card["action_names"][a] for a in label.split("+"))
    for pair in data["pairs"]:
        assert len(pair["ref"]["truth"]) == (truth.pair_id == pair["id"]).sum()
        for part in ("query", "ref"):
            clip = probe_video(site / pair[part]["media"])
            assert clip.num_frames == round((pair[part]["end"] - pair[part]["start"]) * 24)
    assert data["has_detections"] and sum(len(p["ref"]["detections"]) for p in data["pairs"]) == 2
    for name in ("index.html", "viewer.js", "viewer.css", "figure6.png"):
        assert (site / name).stat().st_size > 0


def test_a_benchmark_without_media_is_shown_without_previews(bench, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(bench, plain, ignore=shutil.ignore_patterns("clips"))
    videos = manifest.read_benchmark_table(plain, "videos").assign(status="skipped", clip_path=None, sha256=None)
    manifest.write_table(videos, plain / "videos.parquet", manifest.VIDEOS_SCHEMA)
    viewer.write_site(plain, tmp_path / "site", split="val")
    data = read_data(tmp_path / "site")
    assert data["pairs"] and all(p["ref"]["media"] is None for p in data["pairs"])
    assert not (tmp_path / "site" / "media").exists()


def test_detections_of_another_split_are_refused(bench, tmp_path):
    (tmp_path / "d.csv").write_text("pair_id,timestamp,x1,y1,x2,y2,score\nval-00000,902,0.1,0.1,0.2,0.2,0.5\n")
    result = CliRunner().invoke(main, ["view", str(bench), "--detections", str(tmp_path / "d.csv"),
                                       "--out", str(tmp_path / "site")])
    assert result.exit_code != 0 and "d.csv" in result.output and "row 1" in result.output


def chromium(tmp_path, url, *args):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the page is not checked in a browser")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
               "--window-size=1300,900", "--virtual-time-budget=4000", *args, url]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def colour_pixels(path, colour):
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return int((pixels == np.array(colour, dtype=np.uint8)).all(axis=2).sum())


def test_page_loads_without_console_errors_and_lists_the_pairs(site, tmp_path):
    data = read_data(site)
    run = chromium(tmp_path, (site / "index.html").as_uri(), "--dump-dom")
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # the page logs nothing: no error, no failed resource
    for pair in data["pairs"]:
        assert f'data-pair="{pair["id"]}"' in run.stdout
    assert f'{data["pairs"][0]["id"]}: {data["pairs"][0]["label"]}' in run.stdout


def test_screenshot_shows_truth_and_thresholded_detection_boxes(site, tmp_path):
    pair, boxed, blank = target_and_blank(read_data(site))
    url = (site / "index.html").as_uri()
    shots = {}
    for name, fragment in (("boxed", f"pair={pair['id']}&t={boxed}&thr=0.5"),
                           ("blank", f"pair={pair['id']}&t={blank}&thr=0.5"),
                           ("high", f"pair={pair['id']}&t={boxed}&thr=0.95")):
        shots[name] = tmp_path / f"{name}.png"
        chromium(tmp_path, f"{url}#{fragment}", f"--screenshot={shots[name]}")
    # Boxes are 3 px outlines drawn on a 320 px canvas: hundreds of pixels each; the
    # legend swatches alone give the same small count in every shot.
    assert colour_pixels(shots["boxed"], TRUTH) > colour_pixels(shots["blank"], TRUTH) + 200
    assert colour_pixels(shots["boxed"], DETECTION) > colour_pixels(shots["high"], DETECTION) + 200
