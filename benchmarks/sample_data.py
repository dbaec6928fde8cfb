"""The synthetic benchmarks the training and loader benchmarks run on (imported by the
scripts beside it): `stvr-data make-sample` + `build-ava` at the sizes asked for, built
once into a work folder and reused afterwards."""

from __future__ import annotations

from pathlib import Path

# The demo's build-ava options: enough held-out labels for val and test pairs.
BUILD = {"min_tubelets": 3, "num_val_labels": 2, "num_test_labels": 2}
# A smoke-sized sample: 2 + 2 videos, labels as the tests' tiny benchmark.
TINY_BUILD = {"min_tubelets": 2, "num_val_labels": 1, "num_test_labels": 1}


def build_benchmarks(workdir: Path, sizes: list[int], *, tiny: bool = False) -> dict[int, Path]:
    """{size: benchmark folder} of the sample built at each square `size` (the default
    sample, or a 2 + 2 video one when `tiny`); folders that are complete are reused."""
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions
    from stvr_data.sample import SampleConfig, make_sample

    tag = "-tiny" if tiny else ""
    sample = workdir / f"sample{tag}"
    if not (sample / "annotations").is_dir():
        if tiny:
            make_sample(sample, seed=3, config=SampleConfig(train_videos=2, val_videos=2))
        else:
            make_sample(sample, seed=0)
    out = {}
    for size in sizes:
        bench = workdir / f"bench{size}{tag}"
        if not (bench / "dataset.json").is_file():
            prepare_ava(sample / "annotations", str(sample / "videos"), bench,
                        options=BuildOptions(seed=0, resolution=(size, size), workers=2),
                        **(TINY_BUILD if tiny else BUILD))
        out[size] = bench
    return out
