"""The fast bilinear resampling against a plain reference: one query at a time, autograd.

`reference_bilinear` spells TensorFlow's `interpolate_bilinear` out per query point with
scalar tensor ops, so its values follow from the formula and its gradients from autograd;
the fast path (a sparse tap matrix with a hand-written backward) must agree with it on
random maps and points, borders and integer points included, in both memory formats.
"""

from __future__ import annotations

import math

import pytest
import torch

from stvr_model.warp import (
    dense_image_warp,
    dense_image_warp_many,
    grid_locations,
    interpolate_bilinear,
)

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def reference_bilinear(image: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """`[B, C, H, W]` sampled at `[B, M, 2]` (y, x) points -> `[B, C, M]`, TensorFlow's rule.

    For each axis the lower tap is `floor(q)` clamped to `[0, size - 2]` and the weight of
    the upper tap is `q - lower` clamped to `[0, 1]`: outside the map the edge value repeats
    with no gradient, while at a weight of exactly 0 or 1 (integer points, the edges) the
    gradient passes, so that a zero flow still teaches the points.
    """
    batch, _, height, width = image.shape
    out = []
    for b in range(batch):
        samples = []
        for y, x in queries[b]:
            top = min(max(math.floor(y.item()), 0), height - 2)
            left = min(max(math.floor(x.item()), 0), width - 2)
            a, c = _fraction(y - top), _fraction(x - left)
            upper = (1 - c) * image[b, :, top, left] + c * image[b, :, top, left + 1]
            lower = (1 - c) * image[b, :, top + 1, left] + c * image[b, :, top + 1, left + 1]
            samples.append((1 - a) * upper + a * lower)
        out.append(torch.stack(samples, dim=1))
    return torch.stack(out)


def _fraction(offset: torch.Tensor) -> torch.Tensor:
    """`offset` clamped to [0, 1]; it follows the point inside, ends included."""
    return offset if 0 <= offset.item() <= 1 else offset.detach().clamp(0, 1)


def _queries(batch: int, count: int, height: int, width: int, generator) -> torch.Tensor:
    """Random (y, x) points from 2 pixels outside the map to 2 beyond it, with a share of
    integer points, points on the edges and points on the last row and column."""
    size = torch.tensor([height, width], dtype=torch.float64)
    points = torch.rand(batch, count, 2, generator=generator, dtype=torch.float64) * (size + 4) - 2
    points[:, ::4] = points[:, ::4].round()  # integer points, inside and out
    points[:, 1::8, 0] = height - 1  # the last row exactly
    points[:, 2::8, 1] = width - 1  # the last column exactly
    points[:, 3::8] = 0.0  # the first pixel exactly
    return points


def _values_and_gradients(sample, image, queries, weights):
    image = image.detach().clone().requires_grad_()
    queries = queries.detach().clone().requires_grad_()
    out = sample(image, queries)
    (out * weights).sum().backward()
    return out.detach(), image.grad, queries.grad


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bilinear_matches_the_reference(layout, seed):
    generator = torch.Generator().manual_seed(seed)
    batch, channels, height, width, count = 2, 3, 5, 6, 48
    image = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
    image = image.contiguous(memory_format=LAYOUTS[layout])
    queries = _queries(batch, count, height, width, generator)
    weights = torch.randn(batch, channels, count, generator=generator, dtype=torch.float64)

    def fast(image, queries):
        return interpolate_bilinear(image, queries).transpose(1, 2)

    expected = _values_and_gradients(reference_bilinear, image, queries, weights)
    got = _values_and_gradients(fast, image, queries, weights)
    for name, a, b in zip(("values", "image gradient", "point gradient"), got, expected, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), f"{name}: max error {(a - b).abs().max()}"
    assert got[2].abs().sum() > 0  # points inside the map do get a gradient


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_dense_warp_of_several_maps_matches_the_reference(layout):
    generator = torch.Generator().manual_seed(7)
    batch, height, width = 2, 4, 7
    images = [
        torch.randn(batch, c, height, width, generator=generator, dtype=torch.float64)
        .contiguous(memory_format=LAYOUTS[layout])
        .requires_grad_()
        for c in (3, 5)
    ]
    flow = (torch.randn(batch, height, width, 2, generator=generator, dtype=torch.float64) * 2)
    flow = flow.requires_grad_()
    outs = dense_image_warp_many(images, flow)
    weights = [torch.randn(o.shape, generator=generator, dtype=torch.float64) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights, strict=True)).backward()
    got = [o.detach() for o in outs], [i.grad for i in images], flow.grad

    references = [i.detach().clone().requires_grad_() for i in images]
    ref_flow = flow.detach().clone().requires_grad_()
    queries = grid_locations(height, width, torch.device("cpu")).unsqueeze(0) - ref_flow.reshape(batch, -1, 2)
    ref_outs = [reference_bilinear(i, queries).unflatten(2, (height, width)) for i in references]
    sum((o * w).sum() for o, w in zip(ref_outs, weights, strict=True)).backward()

    for out, ref, image in zip(got[0], ref_outs, images, strict=True):
        assert torch.allclose(out, ref.detach(), rtol=0, atol=1e-12)
        assert out.is_contiguous(memory_format=LAYOUTS[layout]) == image.is_contiguous(
            memory_format=LAYOUTS[layout]
        )
    for grad, ref in zip(got[1], references, strict=True):
        assert torch.allclose(grad, ref.grad, rtol=0, atol=1e-12)
    assert torch.allclose(got[2], ref_flow.grad, rtol=0, atol=1e-12)


def test_float32_matches_the_reference_in_float64():
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(1, 4, 6, 5, generator=generator, dtype=torch.float64)
    flow = torch.randn(1, 6, 5, 2, generator=generator, dtype=torch.float64) * 3
    queries = grid_locations(6, 5, torch.device("cpu")).unsqueeze(0) - flow.reshape(1, -1, 2)
    expected = reference_bilinear(image, queries).reshape(1, 4, 6, 5)
    got = dense_image_warp(image.float(), flow.float())
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, rtol=0, atol=1e-5)
