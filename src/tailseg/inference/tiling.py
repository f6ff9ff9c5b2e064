"""Tiled inference: whole-image, LMP's efficient / optimized tiling and mmsegmentation's sliding window.

Every strategy maps images ``(B, 3, H, W)`` to logits ``(B, C, H, W)`` by running the model on windows of the
images and writing (or averaging) the window logits into one output buffer that is allocated once:

- ``whole``: one window, the full image.
- ``efficient`` (Rota Bulò et al., CVPR 2017, §5.2, Table 1): ``n`` non-overlapping full-height tiles across the
  width; each pixel's logits come from the one tile that contains it.
- ``optimized`` (same paper, §5.2, Tables 2 and 3): the efficient tiles widened so that neighbouring tiles overlap
  by ``overlap`` pixels; in each overlap the left half of the decisions comes from the left tile and the right half
  from the right tile.
- ``slide`` (mmsegmentation's ``slide`` test mode): windows of ``crop_size`` every ``stride`` pixels, the last one
  aligned to the border; the logits are averaged where windows overlap.

Layout (columns ``[a, b)`` are half-open; ``W`` the image width, ``n = min(tiles, W)``):

- Core boundaries ``b_k = ⌊k·W / n⌋`` for ``k = 0..n``; core ``k`` is ``[b_k, b_{k+1})``, so the core widths are
  ``⌊W/n⌋`` or ``⌈W/n⌉`` and never 0. Asking for more tiles than columns gives ``W`` tiles of width 1.
- ``efficient``: tile ``k`` is its core.
- ``optimized``: tile ``k`` is ``[max(0, b_k - ⌊o/2⌋), min(W, b_{k+1} + ⌈o/2⌉))`` with ``o = overlap``: the inner
  sides of the core are extended, the image borders clip. Two neighbours overlap on
  ``[b_k - ⌊o/2⌋, b_k + ⌈o/2⌉)`` (``o`` pixels, fewer only where a border clips); the output at each column is
  taken from the tile whose core holds it, i.e. the left ``⌊o/2⌋`` columns of the overlap from the left tile and
  the right ``⌈o/2⌉`` from the right tile. Tiles narrower than the overlap are fine: a tile then reaches past its
  neighbour's core, and its width stays ``≤ ⌈W/n⌉ + o``.
- ``slide`` (per axis, size ``S``, crop ``c``, stride ``s ≤ c``): ``g = ⌈max(S - c, 0) / s⌉ + 1`` windows,
  window ``i`` ends at ``e = min(i·s + c, S)`` and starts at ``max(e - c, 0)``. A crop larger than the image
  shrinks to the image (no padding); the 2-D windows are all (row window, column window) pairs.

Batching and memory: windows of equal size are grouped and sent through the model ``batch_size`` windows at a time,
each window for all ``B`` images, so one forward pass sees at most ``batch_size · B`` crops stacked window-major;
beyond the output buffer (and, for ``slide``, an ``(H, W)`` count map) at most one such batch of inputs and logits
is alive at a time. The functions run under the caller's grad mode: wrap them in ``torch.no_grad()`` (as Lightning
does for validation and test) for that bound to hold.

Models with a stride constraint: ``pad_to`` zero-pads every window at the bottom and right to a multiple of
``pad_to`` before the forward pass and crops the logits back; segmentation_models_pytorch's DeepLabV3+ needs 16.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

TilingMode = Literal["whole", "efficient", "optimized", "slide"]
MODES: tuple[str, ...] = ("whole", "efficient", "optimized", "slide")

Model = Callable[[torch.Tensor], torch.Tensor]


class Window(NamedTuple):
    """One model input ``images[..., y0:y1, x0:x1]`` and the part ``[ky0:ky1, kx0:kx1]`` (image coordinates) of
    its logits that is kept."""

    y0: int
    y1: int
    x0: int
    x1: int
    ky0: int
    ky1: int
    kx0: int
    kx1: int


# --------------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int, or a ValueError naming ``name`` if it is not an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            as_int = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
        if as_int != value:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        value = as_int
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _check_pair(name: str, value: object) -> tuple[int, int]:
    """``value`` (an int or an ``(h, w)`` pair) as a pair of positive ints, or a ValueError naming ``name``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (height, width) pair of positive ints, got {value!r}")
        return _check_int(f"{name}[0]", value[0], 1), _check_int(f"{name}[1]", value[1], 1)
    size = _check_int(name, value, 1)
    return size, size


def _check_slide(crop_size: object, stride: object) -> tuple[tuple[int, int], tuple[int, int]]:
    """The checked ``(crop_size, stride)``; ``stride`` defaults to ``crop_size`` and may not exceed it."""
    if crop_size is None:
        raise ValueError("crop_size is required for mode 'slide'")
    crop = _check_pair("crop_size", crop_size)
    step = crop if stride is None else _check_pair("stride", stride)
    if step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(f"stride {step} must not exceed crop_size {crop} (the windows would leave gaps)")
    return crop, step


def _check_images(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-2] < 1 or images.shape[-1] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor with H, W >= 1, got {shape}")
    return images


# --------------------------------------------------------------------------------------------------------------------
# Layouts (1-D, along the width unless said otherwise)


def tile_bounds(width: int, tiles: int) -> list[int]:
    """Core boundaries ``b_k = ⌊k·W / n⌋``, ``k = 0..n``, with ``n = min(tiles, width)``.

    Args:
        width: Image width ``W >= 1``.
        tiles: Requested number of tiles, ``>= 1``.

    Returns:
        The ``n + 1`` increasing boundaries from 0 to ``width``.
    """
    width = _check_int("width", width, 1)
    n = min(_check_int("tiles", tiles, 1), width)
    return [k * width // n for k in range(n + 1)]


def efficient_tiles(width: int, tiles: int = 5) -> list[tuple[int, int]]:
    """The half-open column spans ``[b_k, b_{k+1})`` of the efficient tiling.

    Reference:
        Rota Bulò et al., "Loss Max-Pooling for Semantic Image Segmentation", CVPR 2017, §5.2 and Table 1:
        "five non-overlapping, rectangular crops with full image height".
    """
    bounds = tile_bounds(width, tiles)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def optimized_tiles(width: int, tiles: int = 5, overlap: int = 200) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The ``(tile, core)`` column spans of the optimized tiling.

    Tile ``k`` is ``[max(0, b_k - ⌊o/2⌋), min(W, b_{k+1} + ⌈o/2⌉))`` and its core (the columns whose logits it
    provides) ``[b_k, b_{k+1})``; see the module docstring.

    Returns:
        One ``((start, stop), (core_start, core_stop))`` per tile, left to right.

    Reference:
        Rota Bulò et al., CVPR 2017, §5.2 and Table 2: "a 200 pixel overlap between tiles [...] The final class
        label decisions for the first half of the overlap area are then exclusively taken by the left tile while
        the second half is provided by the right tile".
    """
    overlap = _check_int("overlap", overlap, 0)
    left, right = overlap // 2, overlap - overlap // 2
    return [((max(0, a - left), min(width, b + right)), (a, b)) for a, b in efficient_tiles(width, tiles)]


def slide_windows(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """mmsegmentation's sliding windows along one axis of length ``size``.

    ``g = ⌈max(size - crop, 0) / stride⌉ + 1`` windows; window ``i`` ends at ``e = min(i·stride + crop, size)`` and
    starts at ``max(e - crop, 0)``: the last window is aligned to the border and a crop larger than the image
    shrinks to it. With ``stride <= crop`` the windows cover every pixel and are distinct.

    Returns:
        The half-open spans ``(start, stop)``, in increasing order.

    Reference:
        mmsegmentation, ``EncoderDecoder.slide_inference`` (``test_cfg=dict(mode='slide', crop_size, stride)``).
    """
    size = _check_int("size", size, 1)
    crop = _check_int("crop_size", crop, 1)
    stride = _check_int("stride", stride, 1)
    if stride > crop:
        raise ValueError(f"stride {stride} must not exceed crop_size {crop} (the windows would leave gaps)")
    grids = -(-max(size - crop, 0) // stride) + 1
    spans = []
    for i in range(grids):
        stop = min(i * stride + crop, size)
        spans.append((max(stop - crop, 0), stop))
    return spans


# --------------------------------------------------------------------------------------------------------------------
# The engine


def _forward(model: Model, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, or a ValueError if it is not a ``(N, C, h, w)`` tensor for ``x`` of shape ``(N, C_in, h, w)``."""
    y = model(x)
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[0] != x.shape[0] or y.shape[-2:] != x.shape[-2:]:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"the model must map (N, C_in, h, w) inputs to (N, C, h, w) logits; {tuple(x.shape)} gave {got}"
        )
    return y


def _run(
    model: Model, images: torch.Tensor, windows: list[Window], batch_size: int, pad_to: int, average: bool
) -> torch.Tensor:
    """Run ``model`` over ``windows`` and assemble the kept logits into one ``(B, C, H, W)`` buffer.

    With ``average`` the kept logits are summed and divided by the number of windows that keep each pixel;
    otherwise the kept regions must be disjoint and cover the image, and are copied.
    """
    b, _, height, width = images.shape
    groups: dict[tuple[int, int], list[Window]] = {}
    for window in windows:
        groups.setdefault((window.y1 - window.y0, window.x1 - window.x0), []).append(window)
    out: torch.Tensor | None = None
    for (h, w), group in groups.items():
        pad_h, pad_w = -h % pad_to, -w % pad_to
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            parts = [images[:, :, win.y0 : win.y1, win.x0 : win.x1] for win in chunk]
            x = parts[0] if len(parts) == 1 else torch.cat(parts)  # a single window goes as a view
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
            y = _forward(model, x)
            if out is None:
                out = torch.zeros((b, y.shape[1], height, width), dtype=y.dtype, device=images.device)
            elif y.shape[1] != out.shape[1]:
                raise ValueError(f"the model gave {y.shape[1]} channels for one window and {out.shape[1]} for another")
            for i, win in enumerate(chunk):
                rows, cols = slice(win.ky0 - win.y0, win.ky1 - win.y0), slice(win.kx0 - win.x0, win.kx1 - win.x0)
                logits = y[i * b : (i + 1) * b, :, rows, cols]
                target = out[:, :, win.ky0 : win.ky1, win.kx0 : win.kx1]
                if average:
                    target += logits.to(device=out.device)
                else:
                    target.copy_(logits)
            del parts, x, y, logits, target
    assert out is not None  # at least one window
    if average:
        row_count = torch.zeros(height, dtype=out.dtype, device=out.device)
        col_count = torch.zeros(width, dtype=out.dtype, device=out.device)
        for y0, y1 in {(win.ky0, win.ky1) for win in windows}:
            row_count[y0:y1] += 1
        for x0, x1 in {(win.kx0, win.kx1) for win in windows}:
            col_count[x0:x1] += 1
        out /= row_count[:, None] * col_count[None, :]  # the windows are a grid: count(y, x) = rows(y) · cols(x)
    return out


def predict_whole(model: Model, images: torch.Tensor, pad_to: int = 1) -> torch.Tensor:
    """The logits of the full images in one forward pass.

    Args:
        model: Maps ``(N, 3, h, w)`` inputs to ``(N, C, h, w)`` logits.
        images: The input batch.
        pad_to: Zero-pad the input at the bottom and right to a multiple of this before the model (then crop the
            logits back); 1 disables it.

    Returns:
        The logits, with the model output's dtype, on the device of ``images``.

    Shape:
        images ``(B, 3, H, W)`` -> ``(B, C, H, W)``.
    """
    images = _check_images(images)
    pad_to = _check_int("pad_to", pad_to, 1)
    _, _, height, width = images.shape
    return _run(model, images, [Window(0, height, 0, width, 0, height, 0, width)], 1, pad_to, average=False)


def predict_efficient(
    model: Model, images: torch.Tensor, tiles: int = 5, batch_size: int = 1, pad_to: int = 1
) -> torch.Tensor:
    """Efficient tiling: ``tiles`` non-overlapping full-height tiles across the width, logits concatenated.

    The tiles are :func:`efficient_tiles` (boundaries ``⌊k·W / n⌋``, ``n = min(tiles, W)``).

    Args:
        model: Maps ``(N, 3, h, w)`` inputs to ``(N, C, h, w)`` logits.
        images: The input batch.
        tiles: Number of tiles; reduced to ``W`` for narrower images.
        batch_size: Tiles of equal size sent through the model together (each for all ``B`` images).
        pad_to: Zero-pad each tile at the bottom and right to a multiple of this (16 for DeepLabV3+).

    Returns:
        The logits, with the model output's dtype, on the device of ``images``.

    Shape:
        images ``(B, 3, H, W)`` -> ``(B, C, H, W)``.

    Reference:
        Rota Bulò et al., "Loss Max-Pooling for Semantic Image Segmentation", CVPR 2017, §5.2, Table 1.
    """
    images = _check_images(images)
    tiles, batch_size = _check_int("tiles", tiles, 1), _check_int("batch_size", batch_size, 1)
    pad_to = _check_int("pad_to", pad_to, 1)
    height = images.shape[-2]
    windows = [Window(0, height, a, b, 0, height, a, b) for a, b in efficient_tiles(images.shape[-1], tiles)]
    return _run(model, images, windows, batch_size, pad_to, average=False)


def predict_optimized(
    model: Model, images: torch.Tensor, tiles: int = 5, overlap: int = 200, batch_size: int = 1, pad_to: int = 1
) -> torch.Tensor:
    """Optimized tiling: full-height tiles overlapping by ``overlap`` pixels, each overlap split at its middle.

    The tiles are :func:`optimized_tiles`: the efficient tiles (cores) widened by ``⌊overlap/2⌋`` on the left and
    ``⌈overlap/2⌉`` on the right, clipped at the image borders; every column's logits come from the tile whose core
    holds it, so the left half of an overlap is decided by the left tile and the right half by the right tile.

    Args:
        model: Maps ``(N, 3, h, w)`` inputs to ``(N, C, h, w)`` logits.
        images: The input batch.
        tiles: Number of tiles; reduced to ``W`` for narrower images.
        overlap: Width of the overlap between neighbouring tiles, in pixels (0 gives the efficient tiling).
        batch_size: Tiles of equal size sent through the model together (each for all ``B`` images).
        pad_to: Zero-pad each tile at the bottom and right to a multiple of this (16 for DeepLabV3+).

    Returns:
        The logits, with the model output's dtype, on the device of ``images``.

    Shape:
        images ``(B, 3, H, W)`` -> ``(B, C, H, W)``.

    Reference:
        Rota Bulò et al., "Loss Max-Pooling for Semantic Image Segmentation", CVPR 2017, §5.2, Tables 2 and 3.
    """
    images = _check_images(images)
    tiles, overlap = _check_int("tiles", tiles, 1), _check_int("overlap", overlap, 0)
    batch_size, pad_to = _check_int("batch_size", batch_size, 1), _check_int("pad_to", pad_to, 1)
    height = images.shape[-2]
    windows = [
        Window(0, height, a, b, 0, height, ca, cb)
        for (a, b), (ca, cb) in optimized_tiles(images.shape[-1], tiles, overlap)
    ]
    return _run(model, images, windows, batch_size, pad_to, average=False)


def predict_slide(
    model: Model,
    images: torch.Tensor,
    crop_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    batch_size: int = 1,
    pad_to: int = 1,
) -> torch.Tensor:
    """Sliding-window inference: windows of ``crop_size`` every ``stride`` pixels, overlapping logits averaged.

    The windows are all pairs of :func:`slide_windows` along the height and the width: the last window of each axis
    is aligned to the border, and a crop larger than the image shrinks to the image (no padding, unless
    ``pad_to``). Each pixel's logits are the mean over the windows that contain it.

    Args:
        model: Maps ``(N, 3, h, w)`` inputs to ``(N, C, h, w)`` logits.
        images: The input batch.
        crop_size: Window ``(height, width)``, or one int for both.
        stride: Step ``(height, width)`` between windows, each ``<=`` the crop's; defaults to ``crop_size``
            (windows that only overlap where the last one is aligned to the border).
        batch_size: Windows of equal size sent through the model together (each for all ``B`` images).
        pad_to: Zero-pad each window at the bottom and right to a multiple of this (16 for DeepLabV3+).

    Returns:
        The logits, with the model output's dtype (a floating-point one), on the device of ``images``.

    Shape:
        images ``(B, 3, H, W)`` -> ``(B, C, H, W)``.

    Reference:
        mmsegmentation, ``EncoderDecoder.slide_inference`` (``test_cfg=dict(mode='slide', crop_size, stride)``),
        which pads the image to the crop instead of shrinking the window.
    """
    images = _check_images(images)
    (crop_h, crop_w), (stride_h, stride_w) = _check_slide(crop_size, stride)
    batch_size, pad_to = _check_int("batch_size", batch_size, 1), _check_int("pad_to", pad_to, 1)
    rows = slide_windows(images.shape[-2], crop_h, stride_h)
    cols = slide_windows(images.shape[-1], crop_w, stride_w)
    windows = [Window(y0, y1, x0, x1, y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]
    return _run(model, images, windows, batch_size, pad_to, average=True)


class Tiling:
    """A test-time tiling strategy: ``Tiling(mode, ...)(model, images) -> logits``.

    A plain class with typed arguments, so it can be given in a LightningCLI YAML as
    ``{class_path: tailseg.inference.tiling.Tiling, init_args: {mode: optimized, overlap: 200}}``. The arguments are
    checked here; the ones a mode does not use are checked too but ignored.

    Args:
        mode: ``"whole"`` (:func:`predict_whole`), ``"efficient"`` (:func:`predict_efficient`, LMP paper Table 1),
            ``"optimized"`` (:func:`predict_optimized`, LMP paper Table 2) or ``"slide"`` (:func:`predict_slide`,
            mmsegmentation).
        tiles: Number of full-height tiles of ``efficient`` and ``optimized``; reduced to ``W`` for narrower images.
        overlap: Overlap in pixels between neighbouring ``optimized`` tiles.
        crop_size: Window ``(height, width)`` of ``slide``; required for it.
        stride: Window step ``(height, width)`` of ``slide``, each ``<=`` the crop's; defaults to ``crop_size``.
        batch_size: Windows of equal size per forward pass, each for all ``B`` images of the batch.
        pad_to: Zero-pad each window at the bottom and right to a multiple of this before the model and crop the
            logits back; 1 disables it, DeepLabV3+ (segmentation_models_pytorch) needs 16.

    Shape:
        images ``(B, 3, H, W)`` -> logits ``(B, C, H, W)`` with the model output's dtype, on the images' device.

    Raises:
        ValueError: An unknown ``mode``, ``tiles < 1``, ``overlap < 0``, a non-positive ``crop_size`` or ``stride``,
            ``stride > crop_size``, ``slide`` without ``crop_size``, ``batch_size < 1`` or ``pad_to < 1``.

    Reference:
        Rota Bulò et al., "Loss Max-Pooling for Semantic Image Segmentation", CVPR 2017, §5.2, Tables 1 and 2;
        mmsegmentation's ``slide`` inference (``EncoderDecoder.slide_inference``).
    """

    def __init__(
        self,
        mode: TilingMode = "whole",
        tiles: int = 5,
        overlap: int = 200,
        crop_size: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
        batch_size: int = 1,
        pad_to: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.tiles = _check_int("tiles", tiles, 1)
        self.overlap = _check_int("overlap", overlap, 0)
        self.crop_size = None if crop_size is None else _check_pair("crop_size", crop_size)
        self.stride = None if stride is None else _check_pair("stride", stride)
        if mode == "slide" or self.crop_size is not None:
            self.crop_size, self.stride = _check_slide(self.crop_size, self.stride)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.pad_to = _check_int("pad_to", pad_to, 1)

    def __call__(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        """The logits of ``images`` under this strategy; see the class docstring."""
        if self.mode == "whole":
            return predict_whole(model, images, self.pad_to)
        if self.mode == "efficient":
            return predict_efficient(model, images, self.tiles, self.batch_size, self.pad_to)
        if self.mode == "optimized":
            return predict_optimized(model, images, self.tiles, self.overlap, self.batch_size, self.pad_to)
        assert self.crop_size is not None and self.stride is not None
        return predict_slide(model, images, self.crop_size, self.stride, self.batch_size, self.pad_to)

    def __repr__(self) -> str:
        fields = {
            "whole": ("pad_to",),
            "efficient": ("tiles", "batch_size", "pad_to"),
            "optimized": ("tiles", "overlap", "batch_size", "pad_to"),
            "slide": ("crop_size", "stride", "batch_size", "pad_to"),
        }[self.mode]
        args = "".join(f", {name}={getattr(self, name)!r}" for name in fields)
        return f"{type(self).__name__}(mode={self.mode!r}{args})"
