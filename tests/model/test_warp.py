"""sparse_image_warp against TensorFlow's outputs, hand-computed cases and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stvr_model.warp import (
    WarpError,
    boundary_locations,
    dense_image_warp,
    dense_image_warp_many,
    grid_locations,
    interpolate_bilinear,
    interpolate_spline,
    sparse_flow,
    sparse_image_warp,
)

CASES = [f"case{k:02d}" for k in range(12)]


@pytest.fixture(scope="module")
def reference(shared_dir):
    path = shared_dir / "fixtures" / "warp" / "tfa_sparse_image_warp.npz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return dict(np.load(path))


@pytest.mark.parametrize("case", CASES)
def test_reproduces_tensorflow(reference, case):
    order = int(reference[f"{case}_order"])
    image = torch.from_numpy(reference[f"{case}_image"]).permute(0, 3, 1, 2)
    warped, flow = sparse_image_warp(
        image,
        torch.from_numpy(reference[f"{case}_source"]),
        torch.from_numpy(reference[f"{case}_dest"]),
        interpolation_order=order,
        regularization_weight=float(reference[f"{case}_regularization_weight"]),
        num_boundary_points=int(reference[f"{case}_num_boundary_points"]),
    )
    tolerance = 1e-6 if order == 1 else 1e-9
    assert warped.dtype == torch.float64 and flow.dtype == torch.float64
    np.testing.assert_allclose(flow.numpy(), reference[f"{case}_flow"], rtol=0, atol=tolerance)
    np.testing.assert_allclose(
        warped.permute(0, 2, 3, 1).numpy(), reference[f"{case}_warped"], rtol=0, atol=tolerance
    )


def test_fixture_covers_the_paper_settings(reference):
    orders = {int(reference[f"{c}_order"]) for c in CASES}
    boundaries = {int(reference[f"{c}_num_boundary_points"]) for c in CASES}
    assert {1, 2} <= orders
    assert boundaries == {0, 1, 2, 3}


def test_boundary_points_are_tensorflows_lattice():
    points = boundary_locations(20, 20, 4, torch.device("cpu"))
    assert points.shape == (16, 2)
    as_set = {tuple(p) for p in points.tolist()}
    assert {(0.0, 0.0), (0.0, 4.75), (9.5, 19.0), (19.0, 19.0), (14.25, 0.0)} <= as_set
    assert (9.5, 9.5) not in as_set
    corners = boundary_locations(13, 17, 1, torch.device("cpu"))
    assert corners.tolist() == [[0.0, 0.0], [0.0, 16.0], [12.0, 0.0], [12.0, 16.0]]
    # Thirds are built in float32 by TensorFlow, so they carry float32 rounding.
    thirds = boundary_locations(20, 20, 3, torch.device("cpu"))
    assert float(np.float32(19 / 3)) in set(thirds[:, 1].tolist())


def test_dense_warp_by_hand():
    image = torch.tensor([[[[0.0, 10.0, 20.0], [30.0, 40.0, 50.0]]]], dtype=torch.float64)
    flow = torch.zeros(1, 2, 3, 2, dtype=torch.float64)
    flow[..., 1] = 0.25  # content moves right by a quarter pixel
    flow[0, 1, 2, 0] = -3.0  # this pixel reads from below the image: clamped to the edge
    out = dense_image_warp(image, flow)
    expected = torch.tensor([[0.0, 7.5, 17.5], [30.0, 37.5, 47.5]], dtype=torch.float64)
    assert torch.allclose(out[0, 0], expected, atol=1e-12)


def test_constant_displacement_shifts_the_map():
    torch.manual_seed(0)
    image = torch.randn(2, 3, 12, 14, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.tensor([3.0, 6, 9]), torch.tensor([3.0, 7, 11]), indexing="ij")
    source = torch.stack([ys.flatten(), xs.flatten()], 1).expand(2, 9, 2)
    shift = torch.tensor([2.0, -1.0], dtype=torch.float64)
    warped, flow = sparse_image_warp(image, source, source + shift, interpolation_order=2)
    # An affine motion is reproduced exactly by the spline's linear part.
    assert torch.allclose(flow, shift.expand_as(flow), atol=1e-9)
    rows = (torch.arange(12) - 2).clamp(0, 11)
    cols = (torch.arange(14) + 1).clamp(0, 13)
    expected = image[:, :, rows][:, :, :, cols]
    assert torch.allclose(warped, expected, atol=1e-9)


def test_control_points_land_on_their_destination_with_boundary_points():
    torch.manual_seed(1)
    image = torch.randn(1, 4, 20, 20, dtype=torch.float64)
    source = torch.tensor([[[5.0, 5.0], [10.0, 10.0], [15.0, 12.0]]], dtype=torch.float64)
    dest = torch.tensor([[[6.0, 4.0], [11.0, 12.0], [14.0, 12.0]]], dtype=torch.float64)
    warped, flow = sparse_image_warp(image, source, dest, num_boundary_points=4)
    for (sy, sx), (dy, dx) in zip(source[0].long().tolist(), dest[0].long().tolist(), strict=True):
        assert torch.allclose(warped[0, :, dy, dx], image[0, :, sy, sx], atol=1e-9)
        assert flow[0, dy, dx].tolist() == pytest.approx([dy - sy, dx - sx], abs=1e-9)
    assert flow[0, 0, 0].abs().max() < 1e-9 and flow[0, 19, 19].abs().max() < 1e-9


def test_zero_displacement_returns_the_image_exactly():
    image = torch.randn(2, 5, 20, 20)
    points = torch.tensor([[[5.0, 5.0], [5.0, 15.0], [15.0, 10.0]]]).expand(2, 3, 2)
    warped, flow = sparse_image_warp(image, points, points.clone(), num_boundary_points=4)
    assert torch.equal(warped, image)
    assert flow.dtype == torch.float32 and not flow.any()


def test_float32_matches_float64():
    torch.manual_seed(2)
    image = torch.randn(2, 3, 10, 11, dtype=torch.float64)
    source = torch.rand(2, 5, 2, dtype=torch.float64) * 8 + 1
    dest = source + torch.randn(2, 5, 2, dtype=torch.float64)
    ref, _ = sparse_image_warp(image, source, dest, num_boundary_points=2)
    out, flow = sparse_image_warp(
        image.float(), source.float(), dest.float(), num_boundary_points=2
    )
    assert out.dtype == torch.float32 and flow.dtype == torch.float32
    assert torch.allclose(out.double(), ref, atol=1e-4)


@pytest.mark.parametrize("order, boundary", [(1, 0), (2, 2), (3, 1)])
def test_gradcheck(order, boundary):
    torch.manual_seed(3)
    image = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    source = (torch.rand(2, 4, 2, dtype=torch.float64) * 4 + 1).requires_grad_()
    dest = (source.detach() + 0.6 * torch.randn(2, 4, 2, dtype=torch.float64)).requires_grad_()

    def warp(img, src, dst):
        return sparse_image_warp(img, src, dst, order, 0.0, boundary)

    assert torch.autograd.gradcheck(warp, (image, source, dest), fast_mode=True)


def test_spline_interpolates_its_centres():
    torch.manual_seed(4)
    centres = torch.rand(3, 7, 2, dtype=torch.float64) * 10
    values = torch.randn(3, 7, 2, dtype=torch.float64)
    for order in (1, 2, 3, 4):
        out = interpolate_spline(centres, values, centres, order)
        assert torch.allclose(out, values, atol=1e-8)


def test_singular_system_is_reported():
    image = torch.zeros(2, 1, 8, 8)
    source = torch.tensor([[[2.0, 2.0], [2.0, 2.0], [5.0, 5.0], [2.0, 6.0]]]).expand(2, 4, 2)
    with pytest.raises(WarpError, match=r"singular for batch item\(s\) \[0, 1\]"):
        sparse_image_warp(image, source, source)
    # The regulariser makes the same system solvable.
    warped, _ = sparse_image_warp(image, source, source, regularization_weight=0.01)
    assert warped.shape == image.shape


@pytest.mark.parametrize(
    "image_shape, points_shape, message",
    [
        ((2, 1, 8), (2, 3, 2), "image must be"),
        ((2, 1, 8, 8), (3, 3, 2), "source points must be"),
        ((2, 1, 8, 8), (2, 3, 3), "source points must be"),
        ((2, 1, 1, 8), (2, 3, 2), "at least 2x2"),
    ],
)
def test_bad_shapes_are_reported(image_shape, points_shape, message):
    corners = torch.tensor([[1.0, 1.0, 0.0], [1.0, 5.0, 0.0], [5.0, 3.0, 0.0]])
    points = corners[:, : points_shape[2]].expand(points_shape[0], 3, points_shape[2])
    with pytest.raises(WarpError, match=message):
        sparse_image_warp(torch.zeros(image_shape), points, points, regularization_weight=0.1)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(5)
    image = torch.randn(4, 8, 20, 20, dtype=torch.float64, requires_grad=True)
    source = torch.rand(4, 9, 2, dtype=torch.float64) * 14 + 3
    dest = source + torch.randn(4, 9, 2, dtype=torch.float64)
    ref, ref_flow = sparse_image_warp(image, source, dest, num_boundary_points=4)
    ref.sum().backward()
    image_cuda = image.detach().cuda().requires_grad_()
    out, flow = sparse_image_warp(image_cuda, source.cuda(), dest.cuda(), num_boundary_points=4)
    out.sum().backward()
    assert out.device.type == "cuda" and flow.device.type == "cuda"
    assert torch.allclose(out.cpu(), ref, atol=1e-9)
    assert torch.allclose(flow.cpu(), ref_flow, atol=1e-9)
    assert torch.allclose(image_cuda.grad.cpu(), image.grad, atol=1e-9)


def test_points_get_gradients_at_zero_displacement():
    # A zero-initialised offset predictor starts exactly here; it must still learn.
    torch.manual_seed(6)
    image = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    source = torch.tensor([[[5.0, 5.0], [10.0, 10.0], [15.0, 5.0]]], dtype=torch.float64)
    offsets = torch.zeros(1, 3, 2, dtype=torch.float64, requires_grad=True)
    warped, _ = sparse_image_warp(image, source, source + offsets, num_boundary_points=4)
    (warped * torch.randn_like(warped)).sum().backward()
    assert offsets.grad.abs().min() > 0


def test_warping_many_maps_equals_warping_each():
    torch.manual_seed(7)
    h = torch.randn(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 5, 9, 10, dtype=torch.float64, requires_grad=True)
    flow = (1.5 * torch.randn(2, 9, 10, 2, dtype=torch.float64)).requires_grad_()
    together = dense_image_warp_many([h, c], flow)
    weights = [torch.randn_like(t) for t in together]
    grads = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(together, weights, strict=True)), (h, c, flow)
    )
    each = [dense_image_warp(t, flow) for t in (h, c)]
    expected = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(each, weights, strict=True)), (h, c, flow)
    )
    for got, want in zip([*together, *grads], [*each, *expected], strict=True):
        assert got.is_contiguous() and torch.allclose(got, want, atol=1e-12)


def test_stacked_flows_warp_by_each():
    torch.manual_seed(8)
    image = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    flows = 2 * torch.randn(2, 3, 6, 7, 2, dtype=torch.float64)
    (stacked,) = dense_image_warp_many([image], flows.reshape(2, 18, 7, 2))
    for link in range(3):
        assert torch.allclose(
            stacked[:, :, 6 * link : 6 * (link + 1)], dense_image_warp(image, flows[:, link])
        )


def test_many_maps_gradcheck():
    torch.manual_seed(9)
    maps = [torch.randn(1, k, 5, 6, dtype=torch.float64, requires_grad=True) for k in (1, 2)]
    flow = (0.8 * torch.randn(1, 5, 6, 2, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f, a, b: tuple(dense_image_warp_many([a, b], f)), (flow, *maps), fast_mode=True
    )


def test_results_do_not_share_scratch_memory():
    # The resampling reuses buffers between calls; what it returns must not live in them.
    first = dense_image_warp(torch.ones(1, 2, 4, 4), torch.zeros(1, 4, 4, 2))
    dense_image_warp(torch.full((1, 2, 4, 4), 7.0), torch.zeros(1, 4, 4, 2))
    assert torch.equal(first, torch.ones(1, 2, 4, 4))


def test_non_finite_flow_is_reported():
    flow = torch.zeros(1, 4, 4, 2)
    flow[0, 1, 2, 0] = float("nan")
    with pytest.raises(WarpError, match="finite"):
        dense_image_warp(torch.ones(1, 2, 4, 4), flow)


@pytest.mark.parametrize(
    "order, boundary, regularization", [(1, 0, 0.0), (2, 4, 0.0), (3, 1, 0.01), (4, 2, 0.0)]
)
def test_dense_flow_gradients_match_autograd_through_the_spline(order, boundary, regularization):
    # sparse_flow's backward is written by hand; interpolate_spline is plain autograd.
    torch.manual_seed(10)
    height, width = 9, 11
    source = (torch.rand(2, 5, 2, dtype=torch.float64) * 6 + 1).requires_grad_()
    dest = (source.detach() + 0.7 * torch.randn(2, 5, 2, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(2, height, width, 2, dtype=torch.float64)
    flow = sparse_flow(source, dest, height, width, order, regularization, boundary)
    got = torch.autograd.grad((flow * weight).sum(), (source, dest))

    centres, values = dest, dest - source
    if boundary:
        border = boundary_locations(height, width, boundary, dest.device).expand(2, -1, -1)
        centres = torch.cat([centres, border], 1)
        values = torch.cat([values, torch.zeros_like(border)], 1)
    queries = grid_locations(height, width, dest.device).expand(2, -1, -1)
    expected_flow = interpolate_spline(centres, values, queries, order, regularization)
    want = torch.autograd.grad((expected_flow.view_as(weight) * weight).sum(), (source, dest))
    assert torch.allclose(flow, expected_flow.view_as(flow), atol=1e-9)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, rtol=1e-6, atol=1e-8)


def test_transposed_tap_matrices_are_the_transpose():
    from stvr_model.warp import (
        _bilinear_taps,
        _tap_matrix,
        _transposed_tap_coo,
        _transposed_tap_csr,
    )

    torch.manual_seed(11)
    image = torch.zeros(3, 1, 5, 7)
    # Queries inside, on the border and far outside the map (clamped taps).
    queries = torch.rand(3, 40, 2) * 12 - 3
    columns, weights, _ = _bilinear_taps(queries, image.shape, image.dtype)
    dense = _tap_matrix(columns, weights, 3 * 5 * 7).to_dense()
    csr = _transposed_tap_csr(columns, weights, 3 * 5 * 7, 7)
    coo = _transposed_tap_coo(columns, weights, 3 * 5 * 7)
    for transposed in (csr, coo):
        assert transposed.shape == (105, 120)
        assert torch.equal(transposed.to_dense(), dense.t())


@pytest.mark.parametrize("channels", [3, 300])
def test_image_gradient_is_the_same_through_either_transpose(channels):
    # One map of few channels takes the COO transpose, more channels the CSR one.
    torch.manual_seed(13)
    image = torch.randn(2, channels, 6, 7, dtype=torch.float64, requires_grad=True)
    flow = 1.5 * torch.randn(2, 6, 7, 2, dtype=torch.float64)
    weight = torch.randn(2, channels, 6, 7, dtype=torch.float64)
    (got,) = torch.autograd.grad((dense_image_warp(image, flow) * weight).sum(), image)
    expected = torch.zeros_like(image)
    for item in range(2):
        for y in range(6):
            for x in range(7):
                qy, qx = y - flow[item, y, x, 0].item(), x - flow[item, y, x, 1].item()
                top, left = min(max(int(np.floor(qy)), 0), 4), min(max(int(np.floor(qx)), 0), 5)
                ay, ax = min(max(qy - top, 0.0), 1.0), min(max(qx - left, 0.0), 1.0)
                for dy, wy in ((0, 1 - ay), (1, ay)):
                    for dx, wx in ((0, 1 - ax), (1, ax)):
                        expected[item, :, top + dy, left + dx] += wy * wx * weight[item, :, y, x]
    assert torch.allclose(got, expected, atol=1e-12)


def test_maps_of_different_dtypes_warp_together():
    torch.manual_seed(12)
    h = torch.randn(2, 3, 6, 7, requires_grad=True)
    c = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    flow = (torch.randn(2, 6, 7, 2, dtype=torch.float64) * 1.5).requires_grad_()
    warped_h, warped_c = dense_image_warp_many([h, c], flow)
    assert warped_h.dtype == torch.float32 and warped_c.dtype == torch.float64
    assert torch.allclose(warped_h, dense_image_warp(h, flow), atol=1e-6)
    assert torch.allclose(warped_c, dense_image_warp(c, flow), atol=1e-12)
    (warped_h.sum() + warped_c.sum()).backward()
    assert h.grad.dtype == torch.float32 and c.grad.dtype == torch.float64
    assert torch.isfinite(flow.grad).all()


def test_an_empty_batch_gives_empty_results():
    empty = torch.randn(0, 3, 8, 9, requires_grad=True)
    points = torch.rand(0, 4, 2) * 4 + 1
    warped, flow = sparse_image_warp(empty, points, points + 0.5, num_boundary_points=2)
    assert warped.shape == (0, 3, 8, 9) and flow.shape == (0, 8, 9, 2)
    assert dense_image_warp_many([empty], torch.zeros(0, 16, 9, 2))[0].shape == (0, 3, 16, 9)
    assert interpolate_bilinear(empty, torch.zeros(0, 5, 2)).shape == (0, 5, 3)
    warped.sum().backward()
    assert empty.grad.shape == empty.shape
