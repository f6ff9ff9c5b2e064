"""Tiled inference: every mode against whole-image inference, the exact tile layouts, batching and padding."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tailseg.inference.tiling import (
    Tiling,
    efficient_tiles,
    optimized_tiles,
    predict_efficient,
    predict_optimized,
    predict_slide,
    predict_whole,
    slide_windows,
    tile_bounds,
)


def pointwise_model(seed: int = 0, classes: int = 4) -> nn.Module:
    """A translation-equivariant stand-in: a random 1x1 convolution in float64, eval mode."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, classes, kernel_size=1).double().eval()


def images(b: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def local_coords(x: torch.Tensor) -> torch.Tensor:
    """A position-dependent stand-in: channels (x within the input, y within the input, input width)."""
    n, _, h, w = x.shape
    xs = torch.arange(w, dtype=torch.float64).expand(n, h, w)
    ys = torch.arange(h, dtype=torch.float64)[:, None].expand(n, h, w)
    return torch.stack([xs, ys, torch.full((n, h, w), float(w), dtype=torch.float64)], 1)


class Recorder:
    """Wraps a model and records the input shape of every call."""

    def __init__(self, model) -> None:
        self.model, self.shapes = model, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def needs_multiple_of_16(model):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 16 or x.shape[-1] % 16:
            raise RuntimeError(f"input size {tuple(x.shape[-2:])} is not divisible by 16")
        return model(x)

    return forward


CONFIGS = [
    dict(mode="efficient"),
    dict(mode="efficient", tiles=1),
    dict(mode="efficient", tiles=3, batch_size=3),
    dict(mode="optimized"),  # overlap 200 > every tile
    dict(mode="optimized", tiles=4, overlap=7, batch_size=2),  # odd overlap
    dict(mode="optimized", overlap=0),
    dict(mode="slide", crop_size=(16, 16), stride=(8, 8)),
    dict(mode="slide", crop_size=(100, 200), stride=(50, 50)),  # crop larger than the image
    dict(mode="slide", crop_size=(10, 12), stride=(7, 5), batch_size=4),  # strides that do not divide the size
    dict(mode="slide", crop_size=(20, 40), stride=(20, 40)),  # stride = crop, the last window overlapping
]


def config_id(config: dict) -> str:
    """A test id such as `slide-crop-size-10x12-stride-7x5-batch-size-4`: the mode, then each other argument."""
    parts = [config["mode"]]
    for key, value in config.items():
        if key != "mode":
            parts += [key.replace("_", "-"), "x".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return "-".join(parts)


def size_id(size: tuple[int, int]) -> str:
    return "x".join(map(str, size))


@pytest.mark.parametrize("size", [(37, 101), (64, 64), (1, 7), (4, 3)], ids=size_id)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_every_mode_equals_whole_for_a_pointwise_model(size, config):
    model, x = pointwise_model(), images(2, *size)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(Tiling()(model, x), expected, rtol=0, atol=1e-14)
        got = Tiling(**config)(model, x)
    assert got.shape == expected.shape and got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("size", [(1, 7), (4, 3)], ids=size_id)
def test_one_pixel_windows(size):
    model, x = pointwise_model(), images(2, *size)
    with torch.no_grad():
        got = predict_slide(model, x, crop_size=1, stride=1, batch_size=3)
        assert torch.allclose(got, model(x), rtol=0, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 24),
    w=st.integers(1, 40),
    tiles=st.integers(1, 9),
    overlap=st.integers(0, 30),
    crop=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    stride_frac=st.floats(0.01, 1.0),
    batch_size=st.integers(1, 4),
)
def test_every_mode_equals_whole_property(h, w, tiles, overlap, crop, stride_frac, batch_size):
    model, x = pointwise_model(), images(1, h, w)
    stride = tuple(max(1, math.floor(c * stride_frac)) for c in crop)
    with torch.no_grad():
        expected = model(x)
        for got in (
            predict_efficient(model, x, tiles, batch_size),
            predict_optimized(model, x, tiles, overlap, batch_size),
            predict_slide(model, x, crop, stride, batch_size),
        ):
            assert torch.allclose(got, expected, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------------------- layouts


def test_tile_bounds():
    assert tile_bounds(10, 3) == [0, 3, 6, 10]
    assert tile_bounds(2048, 5) == [0, 409, 819, 1228, 1638, 2048]
    assert tile_bounds(3, 5) == [0, 1, 2, 3]  # more tiles than columns: one column each
    assert tile_bounds(7, 1) == [0, 7]
    assert efficient_tiles(10, 3) == [(0, 3), (3, 6), (6, 10)]


def test_optimized_layout():
    assert optimized_tiles(20, 2, 6) == [((0, 13), (0, 10)), ((7, 20), (10, 20))]
    assert optimized_tiles(20, 2, 5) == [((0, 13), (0, 10)), ((8, 20), (10, 20))]  # odd: 2 left, 3 right
    assert optimized_tiles(9, 3, 8) == [((0, 7), (0, 3)), ((0, 9), (3, 6)), ((2, 9), (6, 9))]
    assert optimized_tiles(10, 3, 0) == [((a, b), (a, b)) for a, b in efficient_tiles(10, 3)]


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 300), tiles=st.integers(1, 12), overlap=st.integers(0, 250))
def test_optimized_layout_properties(width, tiles, overlap):
    layout = optimized_tiles(width, tiles, overlap)
    cores = [core for _, core in layout]
    assert cores == efficient_tiles(width, tiles)
    assert cores[0][0] == 0 and cores[-1][1] == width
    assert all(a1 == b0 for (_, a1), (b0, _) in zip(cores, cores[1:], strict=False))  # a partition
    for (t0, t1), (c0, c1) in layout:
        assert 0 <= t0 <= c0 < c1 <= t1 <= width
        assert t1 - t0 <= math.ceil(width / tiles) + overlap
    for ((_, left_stop), (_, boundary)), ((right_start, _), _) in zip(layout, layout[1:], strict=False):
        # the overlap straddles the boundary: floor(o/2) columns to its left, ceil(o/2) to its right (border-clipped)
        assert boundary - right_start == min(overlap // 2, boundary)
        assert left_stop - boundary == min(overlap - overlap // 2, width - boundary)


def test_slide_windows():
    assert slide_windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert slide_windows(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (7, 11)]  # last window aligned to the border
    assert slide_windows(5, 8, 4) == [(0, 5)]  # crop larger than the image: shrinks to it
    assert slide_windows(8, 8, 8) == [(0, 8)]
    assert slide_windows(1024, 512, 341) == [(0, 512), (341, 853), (512, 1024)]


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 200), crop=st.integers(1, 80), data=st.data())
def test_slide_windows_cover_the_axis(size, crop, data):
    stride = data.draw(st.integers(1, crop))
    spans = slide_windows(size, crop, stride)
    assert spans[0][0] == 0 and spans[-1][1] == size
    assert all(b - a == min(crop, size) for a, b in spans)
    assert all(a0 < a1 and a1 <= b0 for (a0, b0), (a1, _) in zip(spans, spans[1:], strict=False))  # no gaps


# ---------------------------------------------------------------------------------------------------- position-dependent


def test_efficient_splits_at_the_documented_columns():
    out = predict_efficient(local_coords, torch.zeros(2, 3, 3, 10), tiles=3)
    assert out.shape == (2, 3, 3, 10)
    assert out[0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 3]  # x within the tile
    assert out[0, 2, 0].tolist() == [3, 3, 3, 3, 3, 3, 4, 4, 4, 4]  # tile width
    assert (out[:, 1] == torch.arange(3.0)[:, None]).all()  # full height: y within the tile is the image y
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize(
    ("width", "tiles", "overlap", "starts", "widths"),
    [
        # tiles [0, 13) and [7, 20): overlap [7, 13); columns 7-9 from the left tile, 10-12 from the right one
        (20, 2, 6, [0] * 10 + [7] * 10, [13] * 20),
        # odd overlap: tiles [0, 13) and [8, 20); columns 8-9 from the left tile, 10-12 from the right one
        (20, 2, 5, [0] * 10 + [8] * 10, [13] * 10 + [12] * 10),
        # overlap wider than the tiles: tiles [0, 7), [0, 9), [2, 9)
        (9, 3, 8, [0] * 6 + [2] * 3, [7] * 3 + [9] * 3 + [7] * 3),
        # default tiles (5) and overlap (200) on a narrow image: every tile is the whole image
        (10, 5, 200, [0] * 10, [10] * 10),
    ],
    ids=["even-overlap", "odd-overlap", "overlap-wider-than-tiles", "default-tiles-narrow-image"],
)
def test_optimized_takes_each_half_of_an_overlap_from_its_side(width, tiles, overlap, starts, widths):
    out = predict_optimized(local_coords, torch.zeros(1, 3, 2, width), tiles=tiles, overlap=overlap, batch_size=2)
    tile_start = torch.arange(width, dtype=torch.float64) - out[0, 0, 0]  # image x - x within the tile
    assert tile_start.tolist() == starts
    assert out[0, 2, 0].tolist() == widths


def test_slide_averages_over_the_covering_windows():
    out = predict_slide(local_coords, torch.zeros(1, 3, 5, 10), crop_size=(3, 4), stride=(2, 3))
    # column windows [0, 4), [3, 7), [6, 10); row windows [0, 3), [2, 5)
    assert out[0, 0, 0].tolist() == [0, 1, 2, 1.5, 1, 2, 1.5, 1, 2, 3]
    assert out[0, 1, :, 0].tolist() == [0, 1, 1, 1, 2]
    assert (out[0, 2] == 4).all()
    ones = predict_slide(lambda x: torch.ones_like(x[:, :2]), torch.zeros(2, 3, 9, 11), (4, 5), (1, 2), batch_size=3)
    assert torch.equal(ones, torch.ones(2, 2, 9, 11, dtype=torch.float64))


def test_slide_shrinks_a_crop_larger_than_the_image():
    recorder = Recorder(local_coords)
    out = predict_slide(recorder, torch.zeros(1, 3, 3, 5), crop_size=(8, 8), stride=(4, 4))
    assert recorder.shapes == [(1, 3, 3, 5)]
    assert (out[0, 2] == 5).all()


# ---------------------------------------------------------------------------------------------------- batching, memory


@pytest.mark.parametrize("batch_size", [1, 2, 5], ids=lambda b: f"batch-size-{b}")
@pytest.mark.parametrize(
    ("config", "max_h", "max_w"),
    [
        pytest.param(config, max_h, max_w, id=config_id(config))
        for config, max_h, max_w in [
            (dict(mode="efficient"), 37, math.ceil(101 / 5)),
            (dict(mode="efficient", tiles=3), 37, math.ceil(101 / 3)),
            (dict(mode="optimized", overlap=7), 37, math.ceil(101 / 5) + 7),
            (dict(mode="optimized", tiles=4, overlap=30), 37, math.ceil(101 / 4) + 30),
            (dict(mode="slide", crop_size=(16, 20), stride=(9, 11)), 16, 20),
        ]
    ],
)
def test_inputs_are_bounded_by_one_tile_batch(config, max_h, max_w, batch_size):
    recorder, x = Recorder(pointwise_model()), images(2, 37, 101)
    with torch.no_grad():
        out = Tiling(**config, batch_size=batch_size)(recorder, x)
        assert torch.allclose(out, recorder.model(x), rtol=0, atol=1e-13)
    assert recorder.shapes
    assert max(s[0] for s in recorder.shapes) <= batch_size * 2
    assert all(s[0] % 2 == 0 for s in recorder.shapes)  # each window for every image of the batch
    assert max(s[2] for s in recorder.shapes) <= max_h
    assert max(s[3] for s in recorder.shapes) <= max_w


def test_equal_tiles_are_batched_together():
    recorder = Recorder(local_coords)
    predict_efficient(recorder, torch.zeros(2, 3, 4, 10), tiles=3, batch_size=2)
    assert recorder.shapes == [(4, 3, 4, 3), (2, 3, 4, 4)]  # tiles of width 3, 3 together, then the 4
    recorder.shapes.clear()
    predict_optimized(recorder, torch.zeros(1, 3, 4, 30), tiles=3, overlap=4, batch_size=8)
    assert recorder.shapes == [(2, 3, 4, 12), (1, 3, 4, 14)]  # [0, 12), [18, 30) together; [8, 22) alone
    recorder.shapes.clear()
    predict_whole(recorder, torch.zeros(3, 3, 5, 6))
    assert recorder.shapes == [(3, 3, 5, 6)]


def test_output_keeps_size_takes_the_model_dtype_and_the_input_device():
    model = pointwise_model()

    def float32_model(x):
        return model(x).float()

    x = images(2, 13, 29)
    with torch.no_grad():
        for mode in ("whole", "efficient", "optimized", "slide"):
            out = Tiling(mode, crop_size=(8, 8), stride=(5, 5))(float32_model, x)
            assert out.shape == (2, 4, 13, 29) and out.dtype == torch.float32 and out.device == x.device


# ---------------------------------------------------------------------------------------------------- pad_to


@pytest.mark.parametrize(
    "config",
    [
        dict(mode="whole"),
        dict(mode="efficient"),
        dict(mode="optimized", overlap=9),
        dict(mode="slide", crop_size=(20, 30), stride=(11, 17)),
    ],
    ids=lambda c: c["mode"],
)
def test_pad_to_feeds_multiples_and_crops_back(config):
    model, x = pointwise_model(), images(2, 37, 101)
    recorder = Recorder(needs_multiple_of_16(model))
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="divisible by 16"):
            Tiling(**config)(needs_multiple_of_16(model), x)
        out = Tiling(**config, pad_to=16, batch_size=2)(recorder, x)
        assert torch.allclose(out, model(x), rtol=0, atol=1e-13)
    assert all(s[2] % 16 == 0 and s[3] % 16 == 0 for s in recorder.shapes)


def test_pad_to_pads_with_zeros_at_the_bottom_right():
    seen = []

    def model(x):
        seen.append(x)
        return x

    x = torch.ones(1, 3, 5, 7)
    out = predict_whole(model, x, pad_to=4)
    assert seen[0].shape == (1, 3, 8, 8)
    assert seen[0][..., :5, :7].eq(1).all() and seen[0][..., 5:, :].eq(0).all() and seen[0][..., :, 7:].eq(0).all()
    assert torch.equal(out, x)


# ---------------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param(dict(mode="tiled"), "mode", id="mode-unknown"),
        pytest.param(dict(tiles=0), "tiles", id="tiles-zero"),
        pytest.param(dict(tiles=2.5), "tiles", id="tiles-fractional"),
        pytest.param(dict(tiles="5"), "tiles", id="tiles-string"),
        pytest.param(dict(overlap=-1), "overlap", id="overlap-negative"),
        pytest.param(dict(mode="slide"), "crop_size", id="slide-without-crop-size"),
        pytest.param(dict(mode="slide", crop_size=(0, 5)), r"crop_size\[0\]", id="crop-height-zero"),
        pytest.param(dict(mode="slide", crop_size=(5, -1)), r"crop_size\[1\]", id="crop-width-negative"),
        pytest.param(dict(mode="slide", crop_size=(5,)), "crop_size", id="crop-size-one-value"),
        pytest.param(dict(mode="slide", crop_size=(8, 8), stride=(0, 4)), r"stride\[0\]", id="stride-height-zero"),
        pytest.param(dict(mode="slide", crop_size=(8, 8), stride=(4, 9)), "stride", id="stride-wider-than-crop"),
        pytest.param(dict(batch_size=0), "batch_size", id="batch-size-zero"),
        pytest.param(dict(pad_to=0), "pad_to", id="pad-to-zero"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Tiling(**kwargs)


def test_functions_check_their_arguments():
    model, x = pointwise_model(), images(1, 8, 8)
    with pytest.raises(ValueError, match="tiles"):
        predict_efficient(model, x, tiles=0)
    with pytest.raises(ValueError, match="overlap"):
        predict_optimized(model, x, overlap=-3)
    with pytest.raises(ValueError, match="stride"):
        predict_slide(model, x, crop_size=4, stride=5)
    with pytest.raises(ValueError, match="batch_size"):
        predict_slide(model, x, crop_size=4, batch_size=0)
    with pytest.raises(ValueError, match="images"):
        predict_whole(model, x[0])
    with pytest.raises(ValueError, match="model"):
        predict_efficient(lambda t: t[..., :-1], x, tiles=2)  # logits of the wrong size


def test_slide_stride_defaults_to_the_crop():
    tiling = Tiling("slide", crop_size=(4, 6))
    assert tiling.stride == (4, 6)
    assert repr(tiling) == "Tiling(mode='slide', crop_size=(4, 6), stride=(4, 6), batch_size=1, pad_to=1)"


def test_tiling_from_a_class_path_config():
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--tiling", type=Tiling)
    config = parser.parse_args(
        [
            "--tiling",
            '{"class_path": "tailseg.inference.tiling.Tiling", "init_args": {"mode": "slide", '
            '"crop_size": [512, 1024], "stride": [341, 683], "pad_to": 16}}',
        ]  # fmt: skip
    )
    tiling = parser.instantiate_classes(config).tiling
    assert isinstance(tiling, Tiling)
    assert (tiling.mode, tiling.crop_size, tiling.stride, tiling.pad_to) == ("slide", (512, 1024), (341, 683), 16)
