"""The small CPU backbone: output contract, channel layout, size, and motion sensitivity."""

from __future__ import annotations

import pytest
import torch

from stvr_model.backbones import build_backbone
from stvr_model.backbones.small import SmallBackbone, SmallBackboneConfig


@pytest.mark.parametrize(("h", "w"), [(160, 160), (50, 70)])
def test_output_is_1024_channels_at_stride_16(h, w):
    model = build_backbone("small").eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 8, h, w))
    assert out.shape == (2, 1024, -(-h // 16), -(-w // 16))
    assert model.out_channels == 1024


def test_channels_are_t_times_512_plus_c():
    torch.manual_seed(0)
    model = SmallBackbone().eval()
    seen = {}
    model.project.register_forward_hook(lambda _m, _i, out: seen.setdefault("raw", out))
    with torch.no_grad():
        folded = model(torch.rand(1, 3, 8, 32, 48) * 2 - 1)
    raw = seen["raw"]  # (1, 512, 2, 2, 3)
    assert raw.shape == (1, 512, 2, 2, 3)
    for t, c in [(0, 0), (0, 511), (1, 0), (1, 300)]:
        assert torch.equal(folded[:, t * 512 + c], raw[:, c, t])


def test_parameter_count_is_small():
    count = sum(p.numel() for p in SmallBackbone().parameters())
    assert 300_000 < count < 3_000_000


def test_output_depends_on_frame_order():
    # A clip and its time reversal hold the same frames; only motion tells them apart.
    torch.manual_seed(0)
    model = SmallBackbone().eval()
    clip = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        forward, backward = model(clip), model(clip.flip(2))
    assert (forward - backward).abs().max() > 1e-3


def test_every_parameter_gets_a_gradient():
    model = SmallBackbone().train()
    model(torch.rand(2, 3, 8, 32, 32) * 2 - 1).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallBackbone().eval()
    torch.save(model.state_dict(), tmp_path / "small.pt")
    loaded = build_backbone("small", weights=tmp_path / "small.pt").eval()
    clip = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(clip), loaded(clip))


def test_config_rejects_widths_not_divisible_by_groups():
    with pytest.raises(ValueError, match="divisible"):
        SmallBackboneConfig(widths=(24, 48, 100, 256), groups=8)


def test_refuses_wrong_clip_length():
    with pytest.raises(ValueError, match="got shape"):
        SmallBackbone()(torch.zeros(1, 3, 4, 32, 32))
