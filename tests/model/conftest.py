"""A tiny built benchmark (synthetic sample -> build-ava with clips) shared by the
trainer-side tests. Built once per test session in a temporary folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions
    from stvr_data.sample import SampleConfig, make_sample

    root = tmp_path_factory.mktemp("tiny")
    make_sample(root / "sample", seed=3, config=SampleConfig(train_videos=2, val_videos=2))
    prepare_ava(root / "sample" / "annotations", str(root / "sample" / "videos"), root / "bench",
                options=BuildOptions(seed=0, resolution=(64, 64), workers=2),
                min_tubelets=2, num_val_labels=1, num_test_labels=1)
    return root / "bench"


@pytest.fixture
def one_thread():
    """The CI machine's cores are shared: one thread is faster than contending for them
    (requested by the detector and head tests through `pytestmark`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
