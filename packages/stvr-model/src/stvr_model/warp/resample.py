"""Bilinear resampling of feature maps at displaced positions (TensorFlow's `dense_image_warp`).

`dense_image_warp` reads an NCHW (or channels-last) map at `grid - flow`: bilinear, with
TensorFlow's edge clamping, so that the pixel at q lands on q + flow. Flows are
`[B, H, W, 2]` (dy, dx) pixels; query points `[B, M, 2]` (y, x) pixels.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from functools import reduce

import torch
from torch import Tensor

from stvr_model.warp.errors import WarpError
from stvr_model.warp.points import grid_locations
from stvr_model.warp.taps import (
    _bilinear_taps,
    _query_gradient,
    _TapMatrices,
    transposed_as_coo,
)

# The sparse CSR products used below are stable for our use; torch flags the whole CSR
# layout as beta on first use, which would only be noise in every caller's log.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class _Scratch(threading.local):
    """Per-thread reusable CPU buffers for the image-sized temporaries of `_Bilinear`.

    Each temporary is as large as the image (13 MB at 8 x 1024 x 20 x 20). Freshly
    allocated, such blocks come from the kernel as zeroed pages whose faults cost more
    than the copies written into them; reused, they stay mapped. CUDA tensors come from
    torch's caching allocator and do not use these.

    `padded` rows get a stride of C + 16 elements: with C a multiple of 1024 (float32), a
    row stride of exactly 4 KiB sends every element of a column to the same cache set, and
    the transposing copy back to NCHW runs 2-3x slower than with the padded stride.
    """

    PAD = 16

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.dtype], Tensor] = {}

    def get(self, slot: str, shape: tuple[int, int], like: Tensor, padded: bool = False) -> Tensor:
        rows, columns = shape
        if like.device.type != "cpu":
            return like.new_empty(shape)
        stride = columns + self.PAD if padded else columns
        numel = rows * stride
        buffer = self.buffers.get((slot, like.dtype))
        if buffer is None or buffer.numel() < numel:
            buffer = like.new_empty(numel)
            self.buffers[(slot, like.dtype)] = buffer
        return buffer[:numel].view(rows, stride)[:, :columns]


_SCRATCH = _Scratch()


def is_channels_last(tensor: Tensor) -> bool:
    """Whether a 4-D map's memory is channels-last (NHWC), the layout the warp reads fastest."""
    return tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)


def _rows(tensor: Tensor, slot: str | None) -> Tensor:
    """`[B, C, *spatial]` as `[B * prod(spatial), C]` pixel rows (channels last).

    A channels-last map already is its rows (a view). Any other layout is transposed into
    the scratch slot, valid until the slot is next used, or with `slot=None` into a new
    tensor.
    """
    batch, channels = tensor.shape[:2]
    if is_channels_last(tensor):
        return tensor.permute(0, 2, 3, 1).reshape(-1, channels)
    flat = tensor.reshape(batch, channels, -1)
    shape = (batch * flat.shape[2], channels)
    rows = tensor.new_empty(shape) if slot is None else _SCRATCH.get(slot, shape, tensor)
    rows.unflatten(0, (batch, -1)).copy_(flat.transpose(1, 2))
    return rows


def _product(matrix: Tensor, rows: Tensor, batch: int, channels_last: bool, spatial) -> Tensor:
    """`matrix @ rows` as a new `[B, C, *spatial]` map, channels-last or NCHW-contiguous.

    Channels-last: the product is written straight into the new map's memory. Otherwise it
    goes to scratch and is transposed into a new NCHW-contiguous map.
    """
    channels = rows.shape[1]
    if channels_last:
        out = rows.new_empty(matrix.shape[0], channels)
        torch.addmm(out, matrix, rows, beta=0.0, out=out)
        return out.unflatten(0, (batch, -1)).transpose(1, 2).unflatten(2, spatial)
    flat = _SCRATCH.get("product", (matrix.shape[0], channels), rows, padded=True)
    torch.addmm(flat, matrix, rows, beta=0.0, out=flat)
    out = rows.new_empty(batch, channels, *spatial)
    out.view(batch, channels, -1).copy_(flat.unflatten(0, (batch, -1)).transpose(1, 2))
    return out


class _Bilinear(torch.autograd.Function):
    """Bilinear resampling of `[B, C_i, H, W]` maps at `[B, M, 2]` (y, x) query points.

    `apply(queries, out_spatial, *images)` -> one `[B, C_i, *out_spatial]` map per image
    (`prod(out_spatial) = M`, row-major), in the image's memory format (channels-last in,
    channels-last out; anything else gives NCHW-contiguous). The four taps of every query
    make a sparse `M [B*M, B*H*W]` (CSR) that multiplies each image's pixel rows; the
    products write into preallocated outputs (`addmm(..., beta=0, out=...)`), as torch's
    allocating `M @ rows` zero-fills and copies its result, which costs several times the
    product itself. Channels-last maps are their own pixel rows; other layouts are
    transposed into reused scratch buffers (`_Scratch`).

    Backward: the image gradients multiply by M's transpose (CSR, or for a single map of
    few channels an unsorted COO: `taps._TapMatrices`; built once per dtype) and come back
    in the image's memory format, so that autograd sums them with the images' other
    gradients without a layout change; the tap weights'
    gradient (a sampled dense-dense product, summed over images) becomes the queries'
    gradient by hand, the bilinear weights being products of per-axis factors. The pixel
    rows that product reads are kept from the forward pass when the queries need a
    gradient.
    """

    @staticmethod
    def forward(ctx, queries: Tensor, out_spatial, *images: Tensor):
        dtype = reduce(torch.promote_types, (image.dtype for image in images))
        batch = images[0].shape[0]
        columns, weights, factors = _bilinear_taps(queries, images[0].shape, dtype)
        matrices = _TapMatrices(columns, weights, images[0].shape)
        # When the queries need a gradient, the pixel rows are kept for it (a view of the
        # image when it is channels-last): transposing the image again in backward costs
        # more time than holding them costs memory. Otherwise they go through scratch.
        keep = ctx.needs_input_grad[0]
        rows, outs = [], []
        layouts = [is_channels_last(image) for image in images]
        for image, last in zip(images, layouts, strict=True):
            image_rows = _rows(image, None if keep else "rows")
            outs.append(_product(matrices.get(image.dtype), image_rows, batch, last, out_spatial))
            rows.append(image_rows if keep else None)
        ctx.save_for_backward(columns, weights, *factors, *rows)
        ctx.image_shape, ctx.layouts = images[0].shape, layouts
        ctx.query_shape, ctx.query_dtype = queries.shape, queries.dtype
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        columns, weights, factors, inside, *rows = ctx.saved_tensors
        batch, _, height, width = ctx.image_shape
        channels = [g.shape[1] for i, g in enumerate(grads) if ctx.needs_input_grad[2 + i]]
        coo = transposed_as_coo(columns, channels)
        matrices = _TapMatrices(columns, weights, ctx.image_shape, coo)
        grad_images, grad_taps = [], 0
        for index, (image_rows, grad) in enumerate(zip(rows, grads, strict=True)):
            dtype = grad.dtype  # autograd hands each output's gradient in its dtype
            grad_rows = _rows(grad, "grad")
            grad_image = None
            if ctx.needs_input_grad[2 + index]:
                transposed = matrices.get(dtype, transposed=True)
                last = ctx.layouts[index]
                grad_image = _product(transposed, grad_rows, batch, last, (height, width))
            grad_images.append(grad_image)
            if ctx.needs_input_grad[0]:
                # <grad_out[n], rows[column]> at every tap: M's pattern, values in M's order.
                taps = torch.sparse.sampled_addmm(
                    matrices.get(dtype), grad_rows, image_rows.t(), beta=0.0
                )
                grad_taps = grad_taps + taps.values().to(weights.dtype)
        grad_queries = None
        if ctx.needs_input_grad[0]:
            grad_queries = _query_gradient(grad_taps, factors, inside)
            grad_queries = grad_queries.to(ctx.query_dtype).view(ctx.query_shape)
        return grad_queries, None, *grad_images


def interpolate_bilinear(image: Tensor, query_points: Tensor) -> Tensor:
    """Bilinear samples of an NCHW image at `[B, M, 2]` (y, x) pixel points -> `[B, M, C]`.

    Points outside the map take the nearest edge value (TensorFlow's clamping). The result
    is differentiable w.r.t. the image and the points.
    """
    if image.shape[0] == 0:
        return image.reshape(0, query_points.shape[1], image.shape[1])
    (out,) = _Bilinear.apply(query_points, (query_points.shape[1],), image)
    return out.transpose(1, 2)


def dense_image_warp(image: Tensor, flow: Tensor) -> Tensor:
    """Warp an NCHW image by a dense `[B, H, W, 2]` (dy, dx) flow: out[p] = image[p - flow[p]].

    This is TensorFlow's `dense_image_warp` (bilinear, edge clamped). The flow is the motion
    of content: a feature at q moves to q + flow where flow is smooth. The output has the
    image's memory format (channels-last in, channels-last out; otherwise NCHW-contiguous).
    """
    return dense_image_warp_many([image], flow)[0]


def dense_image_warp_many(images: Sequence[Tensor], flow: Tensor) -> list[Tensor]:
    """`dense_image_warp` of several `[B, C_i, H, W]` maps by one flow, resampled together.

    The flow `[B, H, W, 2]` may also hold several flows per batch item, `[B, L*H, W, 2]`
    (L flows stacked along y): each map is then warped by each, giving `[B, C_i, L*H, W]`.
    """
    if not images:
        raise WarpError("dense_image_warp_many needs at least one image")
    batch, _, height, width = images[0].shape
    for image in images:
        if image.dim() != 4 or image.shape[0] != batch or image.shape[2:] != (height, width):
            raise WarpError(
                f"images must share [B, *, H, W] = {[batch, '*', height, width]}, "
                f"got {list(image.shape)}"
            )
    if flow.dim() != 4 or flow.shape[0] != batch or flow.shape[3] != 2:
        raise WarpError(f"flow must be [B, H, W, 2] with B = {batch}, got {list(flow.shape)}")
    if flow.shape[2] != width or flow.shape[1] % height:
        raise WarpError(
            f"flow must be [B, H, W, 2] = {[batch, height, width, 2]} "
            f"(or L flows stacked along H), got {list(flow.shape)}"
        )
    if batch == 0:  # nothing to resample; keep the results attached to the images
        return [image.reshape(0, image.shape[1], *flow.shape[1:3]) for image in images]
    links = flow.shape[1] // height
    grid = grid_locations(height, width, flow.device).to(flow.dtype)
    if links > 1:
        grid = grid.repeat(links, 1)
    queries = grid.unsqueeze(0) - flow.reshape(batch, -1, 2)
    return list(_Bilinear.apply(queries, tuple(flow.shape[1:3]), *images))
