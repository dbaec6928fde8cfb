"""The five recurrent cells: shared interface, gradients, and how each aligns its state."""

from __future__ import annotations

import pytest
import torch

from stvr_model.cells import CellError, CellState, build_cell, control_points

KINDS = ["none", "convlstm", "warp", "traj", "flow"]
B, C, H, W = 2, 8, 12, 12
SMALL = {"bottleneck": 4, "link_channels": 4}


def make(kind: str, **options):
    torch.manual_seed(0)
    return build_cell(kind, C, C, **{**SMALL, **options})


def inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=generator)
    state = CellState(
        torch.randn(B, C, H, W, generator=generator), torch.randn(B, C, H, W, generator=generator)
    )
    flow = 0.7 * torch.randn(B, 2, H, W, generator=generator)
    return x, state, flow


def shifted(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """t moved by (dy, dx) pixels, edges repeated: out[y, x] = t[y - dy, x - dx] clamped."""
    rows = (torch.arange(t.shape[2]) - dy).clamp(0, t.shape[2] - 1)
    cols = (torch.arange(t.shape[3]) - dx).clamp(0, t.shape[3] - 1)
    return t[:, :, rows][:, :, :, cols]


@pytest.mark.parametrize("kind", KINDS)
def test_shared_interface(kind):
    cell = make(kind)
    x, state, flow = inputs()
    out = cell(x, state if kind != "none" else None, flow=flow)
    assert isinstance(out, CellState)
    assert out.h.shape == (B, C, H, W)
    if kind == "none":
        assert out.c is None and torch.equal(out.h, x)
    else:
        assert out.c.shape == (B, C, H, W)
        again = cell(x, out, flow=flow)  # the state carries to the next clip
        assert not torch.equal(again.h, out.h)


@pytest.mark.parametrize("kind", KINDS)
def test_no_state_means_zeros(kind):
    cell = make(kind)
    x, _, flow = inputs()
    zeros = CellState(torch.zeros(B, C, H, W), torch.zeros(B, C, H, W))
    first = cell(x, None, flow=flow)
    explicit = cell(x, zeros if kind != "none" else None, flow=flow)
    assert torch.allclose(first.h, explicit.h, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter_and_the_input(kind):
    cell = make(kind)
    x, _, flow = inputs()
    x.requires_grad_()
    state = None
    for _ in range(2):  # the second step aligns a non-zero state
        state = cell(x, state, flow=flow)
    (state.h.square().sum() + (0 if state.c is None else state.c.sum())).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, parameter in cell.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_zero_displacement_is_exactly_convlstm():
    convlstm, warp = make("convlstm"), make("warp", separable_offset=False)
    warp.gates.load_state_dict(convlstm.gates.state_dict())
    assert not warp.offset.weight.any() and not warp.offset.bias.any()  # identity at start
    x, state, _ = inputs()
    for _ in range(2):
        expected, got = convlstm(x, state), warp(x, state)
        assert torch.equal(got.h, expected.h) and torch.equal(got.c, expected.c)
        state = expected
    assert not warp.last_offsets.any() and not warp.last_flow.any()


def test_hand_set_offsets_align_a_shifted_state():
    convlstm, warp = make("convlstm"), make("warp", num_boundary_points=0, max_offset=None, separable_offset=False)
    warp.gates.load_state_dict(convlstm.gates.state_dict())
    with torch.no_grad():
        warp.offset.bias.copy_(torch.tensor([1.0, 2.0]))  # every control point moves (1, 2)
    x, (h, c), _ = inputs()
    got = warp(x, CellState(h, c))
    expected = convlstm(x, CellState(shifted(h, 1, 2), shifted(c, 1, 2)))
    assert torch.allclose(warp.last_offsets, torch.tensor([1.0, 2.0]).expand(B, 9, 2))
    assert torch.allclose(
        warp.last_flow, torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand(B, 2, H, W)
    )
    assert torch.allclose(got.h, expected.h, atol=1e-5)
    assert torch.allclose(got.c, expected.c, atol=1e-5)


def test_warp_offsets_are_bounded_and_the_identity_near_zero():
    x, (h, c), _ = inputs()
    bounded = make("warp", max_offset=2.0, separable_offset=False)
    free = make("warp", max_offset=None, separable_offset=False)
    for cell in (bounded, free):
        with torch.no_grad():
            cell.offset.bias.copy_(torch.tensor([50.0, -0.001]))
        cell(x, CellState(h, c))
    assert torch.allclose(free.last_offsets[..., 0], torch.tensor(50.0))
    assert bounded.last_offsets[..., 0].max() <= 2.0 and bounded.last_offsets[..., 0].min() > 1.99
    # small offsets pass through almost unchanged (tanh's slope is 1 at zero)
    assert torch.allclose(bounded.last_offsets[..., 1], torch.tensor(-0.001), rtol=1e-4)
    with pytest.raises(CellError, match="max_offset"):
        make("warp", max_offset=0.0)


def test_warp_flow_carries_the_offsets_to_their_destinations():
    # the paper's setting: order 2, 4 boundary points per edge, unbounded offsets
    warp = make("warp", max_offset=None, separable_offset=False)
    with torch.no_grad():
        warp.offset.bias.copy_(torch.tensor([1.0, -2.0]))
    x, state, _ = inputs()
    warp(x, state)
    # TensorFlow's semantics: the flow (dest - source) sits at the destination points.
    dest = control_points(H, W) + torch.tensor([1, -2])
    at_dest = warp.last_flow[:, :, dest[:, 0], dest[:, 1]].transpose(1, 2)
    assert torch.allclose(at_dest, warp.last_offsets, atol=1e-5)
    assert torch.allclose(warp.last_offsets, torch.tensor([1.0, -2.0]).expand(B, 9, 2))
    assert warp.last_flow[:, :, 0, 0].abs().max() < 1e-5  # zero-flow boundary


def test_flow_cell_warps_by_the_given_flow():
    convlstm, cell = make("convlstm"), make("flow")
    cell.gates.load_state_dict(convlstm.gates.state_dict())
    x, (h, c), _ = inputs()
    zero = torch.zeros(B, 2, H, W)
    assert torch.equal(cell(x, CellState(h, c), flow=zero).h, convlstm(x, CellState(h, c)).h)
    flow = torch.tensor([-2.0, 1.0]).view(1, 2, 1, 1).expand(B, 2, H, W)
    got = cell(x, CellState(h, c), flow=flow)
    expected = convlstm(x, CellState(shifted(h, -2, 1), shifted(c, -2, 1)))
    assert torch.allclose(got.h, expected.h, atol=1e-5)
    assert torch.equal(cell.last_flow, flow)


def test_traj_cell_with_still_links_is_convlstm():
    convlstm, traj = make("convlstm"), make("traj")
    traj.gates.load_state_dict(convlstm.gates.state_dict())
    with torch.no_grad():
        traj.links[-1].weight.zero_()
        traj.links[-1].bias.zero_()
    x, state, _ = inputs()
    got, expected = traj(x, state), convlstm(x, state)
    assert traj.last_flow.shape == (B, 5, 2, H, W) and not traj.last_flow.any()
    assert torch.allclose(got.h, expected.h, atol=1e-5)


def test_offset_conv_is_the_authors_strided_separable_conv():
    # The authors: separable_conv2d(concat([x, h]), 2, [1, 1], depth_multiplier=1,
    # stride=5, padding='SAME') on the 20x20 map, then [:, 1:, 1:] -> (5, 10, 15)^2.
    warp = make("warp", max_offset=None)
    depthwise, pointwise = warp.offset
    assert depthwise.groups == 2 * C and depthwise.bias is None and pointwise.out_channels == 2
    generator = torch.Generator().manual_seed(4)
    x, h, c = (torch.randn(B, C, 20, 20, generator=generator) for _ in range(3))
    warp(x, CellState(h, c))
    strided = warp.offset(torch.cat([x, h], dim=1)[:, :, ::5, ::5])[:, :, 1:, 1:]  # (B, 2, 3, 3)
    expected = strided.flatten(2).transpose(1, 2)  # (B, 9, 2) row-major, (dy, dx)
    assert torch.allclose(warp.last_offsets, expected, atol=1e-6)
    assert warp.last_offsets.abs().min() > 0  # the authors' init does not start at zero


def test_offset_conv_starts_glorot_uniform_as_slim_does():
    torch.manual_seed(0)
    depthwise, pointwise = build_cell("warp", 256, 256).offset
    # fans (TF and torch alike): depthwise 512 in / 1 out, pointwise 512 in / 2 out
    for weight, fans in ((depthwise.weight, 513), (pointwise.weight, 514)):
        limit = (6 / fans) ** 0.5
        assert weight.abs().max() <= limit
        assert weight.std().item() == pytest.approx(limit / 3**0.5, rel=0.15 if weight.numel() > 1000 else 0.35)
    assert not pointwise.bias.any()


def test_control_points_follow_the_paper():
    points = control_points(20, 20)
    assert points.tolist() == [[y, x] for y in (5, 10, 15) for x in (5, 10, 15)]
    assert control_points(40, 20).tolist()[:3] == [[10, 5], [10, 10], [10, 15]]


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_maps_too_small_for_the_control_grid_are_reported(size):
    cell = make("warp", separable_offset=False)  # zero offsets: control points stay put
    x = torch.randn(1, C, size, size)
    with pytest.raises(CellError, match="control grid needs a feature map of at least 6x6"):
        cell(x, CellState(x, x))
    x = torch.randn(1, C, 6, 6)
    assert cell(x, CellState(x, x)).h.shape == (1, C, 6, 6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: build_cell("lstm", 8, 8), "unknown cell kind"),
        (lambda: build_cell("warp", 8, 8, links=3), "unknown cell option"),
        (lambda: build_cell("convlstm", 8, 4), "hidden_channels == in_channels"),
        (lambda: build_cell("none", 8, 4), "passes x through"),
        (lambda: build_cell("traj", 8, 8, num_links=0), "num_links must be >= 1"),
    ],
)
def test_bad_construction_is_reported(call, message):
    with pytest.raises(CellError, match=message):
        call()


def test_without_skip_hidden_size_is_free():
    cell = build_cell("warp", C, 4, skip=False, bottleneck=4)
    x, _, _ = inputs()
    state = cell(x, cell(x))
    assert state.h.shape == (B, 4, H, W)


def test_bad_calls_are_reported():
    x, state, flow = inputs()
    with pytest.raises(CellError, match="needs flow"):
        make("flow")(x, state)
    with pytest.raises(CellError, match=r"flow must be \[B, 2, H, W\]"):
        make("flow")(x, state, flow=flow[:, :, :4])
    with pytest.raises(CellError, match="state"):
        make("warp")(x, CellState(state.h[:, :4], state.c))
    with pytest.raises(CellError, match="cell input"):
        make("convlstm")(x[:, :4])


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["warp", "traj", "flow"])
def test_cuda_matches_cpu(kind):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cell = make(kind).double()
    x, (h, c), flow = inputs()
    x, h, c, flow = (t.double() for t in (x, h, c, flow))
    expected = cell(x, CellState(h, c), flow=flow)
    cell = cell.cuda()
    got = cell(x.cuda(), CellState(h.cuda(), c.cuda()), flow=flow.cuda())
    assert got.h.device.type == "cuda" and cell.last_flow.device.type == "cuda"
    assert torch.allclose(got.h.cpu(), expected.h, atol=1e-9)
    assert torch.allclose(got.c.cpu(), expected.c, atol=1e-9)


def test_offset_features_give_the_same_gradients_as_indexing():
    # The warp cell reads [x, h] at its control points through a gather whose gradient
    # is sparse; the input and state gradients must equal those of plain indexing.
    from stvr_model.cells import _at_points

    torch.manual_seed(5)
    image = torch.randn(B, C, H, W, dtype=torch.float64, requires_grad=True)
    points = control_points(H, W)
    weight = torch.randn(B, C, points.shape[0], dtype=torch.float64)
    dense_part = torch.randn(B, C, H, W, dtype=torch.float64)
    loss = (_at_points(image * 2, points) * weight).sum() + (image * dense_part).sum()
    (got,) = torch.autograd.grad(loss, image)
    indexed = (image * 2)[:, :, points[:, 0], points[:, 1]]
    (want,) = torch.autograd.grad((indexed * weight).sum() + (image * dense_part).sum(), image)
    assert got.layout == torch.strided and torch.allclose(got, want)
