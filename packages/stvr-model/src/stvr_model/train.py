"""Training loop for the re-localization detector (paper §6.2, the authors' schedule).

SGD with momentum 0.9, learning rate 0.03 divided by 10 at 10k and 20k iterations,
gradient-norm clipping at 10, batch 8, 2 s references, queries up to 10 s. CUDA with
bf16 autocast when present, CPU otherwise; several GPUs or nodes with `torchrun`
(DistributedDataParallel: each process takes its own slice of every global batch).

`out/last.pt` is rewritten every `checkpoint_every` iterations and `iter_NNNNNN.pt` kept
every `keep_every`; `resume` restores weights, optimiser, RNG and the data position,
so a resumed run continues exactly where it stopped. A non-finite loss stops the run
with a clear message; the last good checkpoint is left untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from stvr_data.errors import StvrDataError
from stvr_data.manifest import read_dataset_card
from stvr_data.tubelets import atom_vocabulary
from stvr_model.checkpoint import (
    CheckpointError,
    build_model,
    load_checkpoint,
    save_checkpoint,
    stored_run,
)
from stvr_model.config import RunConfig, TrainConfig
from stvr_model.data import PairDataset, batch_to_model, collate
from stvr_model.distributed import init_distributed, process_device
from stvr_model.errors import ModelError, NonFiniteError
from stvr_model.feature_cache import FeatureCache
from stvr_model.inference import model_inputs, resolve_device
from stvr_model.visualize import draw_loss_curve

logger = logging.getLogger(__name__)

LAST = "last.pt"
METRICS = "metrics.jsonl"


class TrainingDiverged(ModelError):
    """The loss, or a value inside the network, became NaN or infinite."""


# Settings that may change when a run is resumed: they do not change what is learnt.
RESUMABLE_CHANGES = {f"training.{name}" for name in ("iterations", "checkpoint_every", "keep_every", "log_every",
                                                     "num_workers", "device", "feature_cache")}
# ... and with `allow_lr_change`
LR_CHANGES = {"training.lr", "training.milestones"}


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the authors'), or Adam (beta1 = `momentum`)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(config.momentum, 0.999),
                                weight_decay=config.weight_decay)
    if config.optimizer != "sgd":
        raise StvrDataError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def get_lr(iteration: int, config: TrainConfig) -> float:
    """Step schedule: `lr` divided by 10 at each milestone already reached."""
    return config.lr * 0.1 ** sum(iteration >= m for m in config.milestones)


class BatchWindow(Sampler):
    """Batches of global sample indices for iterations [first, last) on this rank."""

    def __init__(self, first: int, last: int, batch_size: int, rank: int = 0, world: int = 1):
        self.first, self.last, self.batch, self.rank, self.world = first, last, batch_size, rank, world

    def __iter__(self):
        for iteration in range(self.first, self.last):
            base = (iteration * self.world + self.rank) * self.batch
            yield list(range(base, base + self.batch))

    def __len__(self) -> int:
        return self.last - self.first


def train(manifest: str | Path, out: str | Path, run: RunConfig, *, resume: bool = False,
          backbone_weights: str | None = None, progress: bool = True, allow_lr_change: bool = False) -> dict:
    """Train `run.model` on the benchmark in `manifest` with `run`'s data and training
    settings, writing checkpoints and logs to `out`. The backbone starts from
    `backbone_weights` (a state dict file), from `run.training.init_from`, or random."""
    if backbone_weights is not None and run.training.init_from:
        raise StvrDataError("both --weights and --init-from give the backbone's weights: pass one")
    run = with_action_atoms(run, manifest)
    spec, config, data = run.model, run.training, run.data
    out = Path(out)
    device = resolve_device(config.device)
    ranks = init_distributed(device)
    rank, world, local_rank = ranks.rank, ranks.world, ranks.local_rank
    device = process_device(device, ranks)
    torch.manual_seed(config.seed + rank)
    model = build_model(spec, backbone_weights=backbone_weights, weights_follow=bool(config.init_from)).to(device)
    _stage(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    benchmark = benchmark_record(manifest, config.split)
    start = _restore(out, model, optimizer, resume, device, rank, world,
                     expected={"run": run.to_dict(), "benchmark": benchmark},
                     allowed=RESUMABLE_CHANGES | (LR_CHANGES if allow_lr_change else set()))
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    dataset = PairDataset(manifest, config.split, data, seed=config.seed, training=True,
                          max_pairs=config.max_pairs if config.split != "train" else None,
                          action_atoms=spec.detector.action_atoms if spec.detector.action_classes else ())
    loader = DataLoader(dataset, batch_sampler=BatchWindow(start, config.iterations, config.batch_size, rank, world),
                        collate_fn=collate, num_workers=config.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        # its own generator: drawing worker seeds from the global RNG would
                        # shift the model's random stream on resume
                        generator=torch.Generator().manual_seed(config.seed))
    use_amp = config.amp and device.type == "cuda"
    log = _MetricsLog(out / METRICS, start, enabled=rank == 0)
    bar = tqdm(total=config.iterations, initial=start, disable=not progress or rank != 0,
               desc=f"train {spec.cell.kind}", unit="it", dynamic_ncols=True)
    model.train()
    waited = time.perf_counter()
    for iteration, batch in zip(range(start, config.iterations), loader, strict=False):
        ready = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = get_lr(iteration, config)
        batch = batch_to_model(batch, device)
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                _, losses = model(**model_inputs(batch, spec), targets=batch["targets"])
        except NonFiniteError as err:  # NaN weights stop the warp before any loss exists
            raise _diverged(f"{err} at iteration {iteration}", out) from None
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise _diverged(f"loss is {loss.item()} at iteration {iteration} "
                            f"({ {k: float(v) for k, v in losses.items()} })", out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
        optimizer.step()
        done = time.perf_counter()
        log.add(iteration, loss, losses, grad_norm, get_lr(iteration, config),
                ref_clips=int(batch["ref_valid"].sum()), query_clips=int(batch["query_valid"].sum()),
                world=world, wait=ready - waited, step=done - waited)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{get_lr(iteration, config):.2g}")
        if (iteration + 1) % config.checkpoint_every == 0 or iteration + 1 == config.iterations:
            rng = _rng_state(world)  # every rank: a collective under torchrun
            if rank == 0:
                _save(out, model, optimizer, run, iteration + 1, rng, benchmark)
                log.flush()
                draw_loss_curve(out / METRICS, out / "loss.png")
        waited = time.perf_counter()
    bar.close()
    log.flush()
    return log.summary()


def _diverged(what: str, out: Path) -> TrainingDiverged:
    last = out / LAST
    kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved yet"
    return TrainingDiverged(f"training diverged: {what}; {kept}: lower --lr or check the data")


def _stage(model, config: TrainConfig) -> None:
    """Apply the staged-training settings of `config` to a freshly built model."""
    if config.feature_cache and not config.freeze_backbone:
        raise StvrDataError("a feature cache needs a frozen backbone (--freeze-backbone)")
    if config.init_from:
        fresh = initialise_from(model, config.init_from)
        logger.info("initialised from %s; %d tensors start fresh: %s", config.init_from, len(fresh),
                 ", ".join(fresh[:6]) + (" ..." if len(fresh) > 6 else ""))
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    if config.feature_cache:
        model.feature_cache = FeatureCache(config.feature_cache, model.backbone)


def initialise_from(model: torch.nn.Module, checkpoint: str | Path) -> list[str]:
    """Copy every tensor of `checkpoint`'s model whose name and shape fit `model`; return
    the names of `model`'s tensors left as they were. The backbone must fit whole."""
    stored = load_checkpoint(checkpoint)["model"]
    own = model.state_dict()
    fits = {k: v for k, v in stored.items() if k in own and own[k].shape == v.shape}
    misfit = sorted(k for k in own if k.startswith("backbone.") and k not in fits)
    if misfit:
        raise CheckpointError(f"{checkpoint}: its backbone does not fit this model ({misfit[0]} ...)")
    model.load_state_dict(fits, strict=False)
    return sorted(set(own) - set(fits))


def _restore(out: Path, model, optimizer, resume: bool, device, rank: int = 0,
             world: int = 1, *, expected: dict, allowed: set[str]) -> int:
    """The iteration to start from; loads `last.pt` when resuming (each rank its own
    random state when the run had as many processes). A resume must continue the same
    run: same model, benchmark, data and training settings (`expected`), except the
    dotted settings in `allowed`."""
    last = out / LAST
    if not resume:
        if last.exists():
            raise CheckpointError(f"{last} exists: pass --resume to continue it, or choose another --out")
        return 0
    if not last.exists():
        raise CheckpointError(f"{last}: nothing to resume")
    state = load_checkpoint(last, map_location=device)
    changed = resume_differences(state, expected, allowed)
    if changed:
        raise CheckpointError(f"{last}: cannot resume with changed {changed[0]}"
                              + (" (--allow-lr-change permits a new learning rate)"
                                 if changed[0].split(":")[0] in LR_CHANGES else ""))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    if len(rng.get("ranks") or []) == world:
        rng = rng["ranks"][rank]
    torch.set_rng_state(rng["torch"].cpu())
    if torch.cuda.is_available() and rng.get("cuda") is not None:
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return int(state["iteration"])


def resume_differences(state: dict, expected: dict, allowed: set[str]) -> list[str]:
    """'part.field: stored -> now' (e.g. 'model.cell.kind', 'training.lr') for each run
    setting of `expected["run"]` that differs from the checkpoint's, except those in
    `allowed` and those the checkpoint predates; then the benchmark, if another."""
    stored, now = _dotted(stored_run(state)), _dotted(expected["run"])
    out = [f"{k}: {stored.get(k)!r} -> {now[k]!r}" for k in now
           if k not in allowed and stored.get(k, now[k]) != now[k]]
    stored = state.get("benchmark")
    if stored is not None and stored["fingerprint"] != expected["benchmark"]["fingerprint"]:
        out.append(f"benchmark: {stored['path']} ({stored['fingerprint'][:12]}) -> "
                   f"{expected['benchmark']['path']} ({expected['benchmark']['fingerprint'][:12]})")
    return out


def _dotted(tree: dict, prefix: str = "") -> dict:
    """{'model.cell.kind': 'warp', ...}: the leaves of nested settings by dotted name."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def with_action_atoms(run: RunConfig, benchmark: str | Path) -> RunConfig:
    """`run` with the auxiliary action head's classes: the atomic actions of the labels of
    the split trained on (unchanged without the action loss or when already set)."""
    detector, split = run.model.detector, run.training.split
    if not detector.action_weight or detector.action_atoms:
        return run
    labels = read_dataset_card(benchmark).get("labels", {}).get(split, [])
    if not labels:
        raise StvrDataError(f"{benchmark}: dataset.json lists no {split} labels for the action loss")
    detector = dataclasses.replace(detector, action_atoms=atom_vocabulary(labels))
    return dataclasses.replace(run, model=dataclasses.replace(run.model, detector=detector))


def benchmark_record(benchmark: str | Path, split: str) -> dict:
    """What a checkpoint keeps of the benchmark it was trained on: its path, a hash of the
    card's fingerprint (inputs and options), the label lists and the split trained on."""
    card = read_dataset_card(benchmark)
    digest = hashlib.sha256(json.dumps(card.get("fingerprint"), sort_keys=True).encode()).hexdigest()
    return {"path": str(benchmark), "fingerprint": digest, "labels": card.get("labels", {}),
            "split": split}


def _rng_state(world: int) -> dict:
    """This process's random state, and under torchrun every rank's in `ranks`."""
    state = {"torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    if world > 1:
        ranks = [None] * world
        torch.distributed.all_gather_object(ranks, state)
        state["ranks"] = ranks
    return state


def _save(out: Path, model, optimizer, run: RunConfig, iteration: int, rng: dict, benchmark: dict) -> None:
    module = model.module if hasattr(model, "module") else model
    state = {
        "model": module.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
        "run": run.to_dict(), "rng": rng, "benchmark": benchmark,
    }
    save_checkpoint(out / LAST, state)
    if iteration % run.training.keep_every == 0:
        save_checkpoint(out / f"iter_{iteration:06d}.pt", state)


class _MetricsLog:
    """Per-iteration metrics appended to a JSON-lines file (rank 0 only)."""

    def __init__(self, path: Path, start: int, enabled: bool, every: int = 1):
        self.path, self.enabled, self.rows, self.every = path, enabled, [], every
        self.wait = self.step = 0.0
        self.clips = 0
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = [line for line in (path.read_text().splitlines() if path.exists() else [])
                    if json.loads(line)["iteration"] < start]
            path.write_text("".join(line + "\n" for line in kept))

    def add(self, iteration, loss, losses, grad_norm, lr, *, ref_clips, query_clips, world,
            wait, step) -> None:
        """`ref_clips`/`query_clips`: real (not padding) clips in this process's batch;
        the summary's throughput counts both, times the number of processes."""
        self.wait += wait
        self.step += step
        self.clips += (ref_clips + query_clips) * world
        if self.enabled:
            self.rows.append({"iteration": iteration, "loss": loss.item(), "lr": lr,
                              "grad_norm": float(grad_norm), "data_wait_s": round(wait, 4),
                              "step_s": round(step, 4), "ref_clips": ref_clips,
                              "query_clips": query_clips,
                              **{k: v.item() for k, v in losses.items()}})

    def flush(self) -> None:
        if self.enabled and self.rows:
            with self.path.open("a") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in self.rows)
            self.rows = []

    def summary(self) -> dict:
        return {"clips_per_second": self.clips / self.step if self.step else 0.0,
                "data_wait_fraction": self.wait / self.step if self.step else 0.0,
                "seconds": self.step}
