"""Procedural street scenes with Cityscapes' 19 classes: the renderer behind the synthetic benchmark.

`render_scene(rng, height, width)` paints one street-like image and its label map with the
painter's algorithm: background layers (sky, buildings, road, sidewalks, terrain, walls,
fences), then objects sorted from far to near, each scaled by its distance to the horizon
(perspective), so the same class appears large and small (intra-class imbalance).

How the benchmark makes imbalance a real problem (see `tailseg.data.synthetic` for the numbers):
- Frequent "stuff" classes (road, building, vegetation, sky, sidewalk) cover most pixels and
  appear in almost every image; rare "things" (train, bus, truck, motorcycle, rider, traffic
  light) appear in few images and cover few pixels when they do (inter-class imbalance).
- Classes share colours on purpose (grey cars on a grey road, beige walls and beige
  buildings, green terrain and green trees, clothes in any colour) and are told apart by
  texture (window grids vs. brick lines, leafy speckle vs. smooth grass, tiles vs. asphalt),
  shape (wheels, thin poles, lattices) and context (riders sit on two-wheelers, lights and signs
  hang on poles, trains run on rails). Every image gets lighting jitter and sensor noise.
- Pixels the annotation leaves out are `IGNORE` (255): the ego-vehicle's bonnet, rails and
  unlabelled street clutter, as in Cityscapes' void classes.
- With `shade > 0`, a share of the scenes gets large soft shadows (`_shade`): inside them the
  image is blurred, desaturated and darkened, so textures vanish and frequent classes (building
  and vegetation, sidewalk and road) can be told apart only by shape and context, as in the
  shaded and distant parts of real street photographs. Without shade, every frequent class is
  recognisable by its texture alone, which makes re-weighting losses look free on the frequent
  classes; CamVid shows they are not (BENCHMARKS.md, "Synthetic benchmark against CamVid").
  Shade changes the appearance only: it draws from its own generator, so the label maps are
  those of `shade = 0` for the same seed.

Everything is drawn with OpenCV primitives inside object bounding boxes, so one 192x384 scene
takes a few milliseconds.
"""

from __future__ import annotations

import cv2
import numpy as np

IGNORE = 255

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = range(8)
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(8, 19)

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Probability that a scene contains at least one instance (inter-class imbalance).
PRESENCE: dict[int, float] = {
    TERRAIN: 0.5, WALL: 0.3, FENCE: 0.35, TRAFFIC_LIGHT: 0.22, PERSON: 0.7, RIDER: 0.12,
    TRUCK: 0.1, BUS: 0.08, TRAIN: 0.05, MOTORCYCLE: 0.1, BICYCLE: 0.2,
}  # fmt: skip


class _Canvas:
    """An image (float32, HxWx3) and its label map (uint8, HxW) painted together."""

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        self.h, self.w, self.rng = height, width, rng
        self.u = height / 192.0  # sizes below are given for a 192-pixel-high image
        self.image = np.zeros((height, width, 3), np.float32)
        self.label = np.full((height, width), IGNORE, np.uint8)

    def texture(self, shape: tuple[int, int], colour, noise: float, kind: str = "flat") -> np.ndarray:
        """A `shape` patch of `colour` with a texture: flat, speckle (leafy) or smooth (grass)."""
        rng = self.rng
        h, w = shape
        base = np.asarray(colour, np.float32).reshape(1, 1, 3)
        if kind == "speckle":
            grain = rng.normal(0.0, noise, (h, w, 1)).astype(np.float32)
            spots = (rng.random((h, w, 1)) < 0.12) * -45.0
            return base + grain + spots
        if kind == "smooth":
            coarse = rng.normal(0.0, noise, (max(2, h // 12), max(2, w // 12), 1)).astype(np.float32)
            low = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 1)
            return base + low + rng.normal(0.0, 3.0, (h, w, 1)).astype(np.float32)
        return base + rng.normal(0.0, noise, (h, w, 1)).astype(np.float32)

    def paint(self, y0: int, x0: int, shape_mask: np.ndarray, pixels: np.ndarray, label: int) -> None:
        """Composite `pixels` where the local `shape_mask` is set, its top-left corner at (y0, x0)."""
        h, w = shape_mask.shape
        ya, xa = max(y0, 0), max(x0, 0)
        yb, xb = min(y0 + h, self.h), min(x0 + w, self.w)
        if ya >= yb or xa >= xb:
            return
        m = shape_mask[ya - y0 : yb - y0, xa - x0 : xb - x0].astype(bool)
        self.image[ya:yb, xa:xb][m] = pixels[ya - y0 : yb - y0, xa - x0 : xb - x0][m]
        self.label[ya:yb, xa:xb][m] = label

    def fill_poly(self, points, colour, label: int, noise: float = 6.0, kind: str = "flat") -> None:
        pts = np.round(np.asarray(points, np.float64)).astype(np.int32)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0) + 1
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(local, [pts - [x0, y0]], 1)
        self.paint(y0, x0, local, self.texture(local.shape, colour, noise, kind), label)

    def rect(self, y0, x0, h, w, colour, label: int, noise: float = 5.0, kind: str = "flat") -> None:
        y0, x0, h, w = int(round(y0)), int(round(x0)), max(1, int(round(h))), max(1, int(round(w)))
        self.paint(y0, x0, np.ones((h, w), np.uint8), self.texture((h, w), colour, noise, kind), label)

    def shape(self, y0, x0, h, w, draw, colour, label: int, noise: float = 5.0) -> None:
        """Paint what `draw(local_uint8_mask)` draws into an h x w box at (y0, x0)."""
        y0, x0, h, w = int(round(y0)), int(round(x0)), max(1, int(round(h))), max(1, int(round(w)))
        local = np.zeros((h, w), np.uint8)
        draw(local)
        self.paint(y0, x0, local, self.texture((h, w), colour, noise), label)


def _jitter(rng: np.random.Generator, colour, amount: float = 18.0) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.normal(0.0, amount, 3), 0, 255)


def _pick(rng: np.random.Generator, palette) -> np.ndarray:
    return _jitter(rng, palette[rng.integers(len(palette))])


VEHICLE_COLOURS = [(90, 90, 95), (130, 130, 135), (30, 30, 35), (220, 220, 215), (160, 30, 30),
                   (30, 60, 150), (170, 170, 175), (60, 90, 60), (200, 170, 60)]  # fmt: skip
CLOTHES = [(40, 40, 50), (150, 30, 40), (30, 60, 140), (200, 200, 190), (90, 110, 60),
           (120, 80, 50), (230, 180, 40), (100, 100, 105)]  # fmt: skip
FACADES = [(150, 140, 125), (175, 165, 145), (125, 125, 130), (150, 95, 75), (195, 190, 180)]


class _Street:
    """Geometry of one scene: horizon, road edges and a depth scale per image row."""

    def __init__(self, canvas: _Canvas) -> None:
        rng, h, w = canvas.rng, canvas.h, canvas.w
        self.c = canvas
        self.horizon = h * rng.uniform(0.3, 0.4)
        self.vx = w * rng.uniform(0.38, 0.62)
        self.left_bottom = w * rng.uniform(-0.45, -0.05)
        self.right_bottom = w * rng.uniform(1.05, 1.45)
        self.walk = w * rng.uniform(0.15, 0.28)  # sidewalk width at the bottom row

    def scale(self, y: float) -> float:
        """Apparent size at ground row y: 0 at the horizon, 1 at the bottom of the image."""
        return max(0.02, (y - self.horizon) / (self.c.h - self.horizon))

    def road_span(self, y: float) -> tuple[float, float]:
        s = self.scale(y)
        return self.vx + (self.left_bottom - self.vx) * s, self.vx + (self.right_bottom - self.vx) * s

    def walk_span(self, y: float, side: int) -> tuple[float, float]:
        left, right = self.road_span(y)
        s = self.scale(y)
        return (left - self.walk * s, left) if side < 0 else (right, right + self.walk * s)


def _background(c: _Canvas, st: _Street) -> None:
    rng, h, w, hz = c.rng, c.h, c.w, st.horizon
    # Sky: a vertical gradient, blue or overcast.
    top = _jitter(rng, (110, 160, 225) if rng.random() < 0.7 else (175, 178, 185), 15)
    bottom = _jitter(rng, (200, 215, 235), 10)
    t = np.linspace(0, 1, h, dtype=np.float32).reshape(h, 1, 1)
    c.image[:] = top * (1 - t) + bottom * t + rng.normal(0, 2.0, (h, 1, 1)).astype(np.float32)
    c.label[:] = SKY
    # Buildings: facades with window grids along both sides of the street, sometimes a closed skyline.
    closed = rng.random() < 0.08
    x = -rng.uniform(0, 30)
    while x < w:
        bw = w * rng.uniform(0.12, 0.35)
        centre = abs((x + bw / 2) - st.vx) / w
        bh = h * (rng.uniform(0.55, 0.9) + 0.8 * centre) if not closed else hz + 5
        y0 = max(0.0, hz + 6 - bh)
        if rng.random() < 0.94 or closed:
            colour = _pick(rng, FACADES)
            c.rect(y0, x, hz + 8 - y0, bw, colour, BUILDING, noise=4)
            _windows(c, int(y0), int(x), int(hz + 2 - y0), int(bw), colour)
        x += bw
    # A few trees far away, in front of the facades.
    for _ in range(rng.integers(0, 5) if rng.random() < 0.85 else 0):
        _tree(c, st, st.horizon + rng.uniform(2, 12), rng.uniform(0, w))
    # Road, sidewalks, and what lies beyond them.
    for side in (-1, 1):
        _beyond_sidewalk(c, st, side)
    road = [(st.left_bottom, h), (st.vx - 2, hz), (st.vx + 2, hz), (st.right_bottom, h)]
    c.fill_poly(road, _jitter(rng, (85, 85, 90), 10), ROAD, noise=7)
    _lane_marks(c, st)
    for side in (-1, 1):
        if rng.random() < 0.95:
            far, near = st.walk_span(hz + 1, side), st.walk_span(h, side)
            poly = [(near[0], h), (far[0], hz + 1), (far[1], hz + 1), (near[1], h)]
            colour = _jitter(rng, (155, 150, 145), 10)
            c.fill_poly(poly, colour, SIDEWALK, noise=5)
            _tiles(c, st, side, colour)


def _windows(c: _Canvas, y0: int, x0: int, h: int, w: int, colour) -> None:
    rng = c.rng
    step_y, step_x = rng.integers(8, 13), rng.integers(8, 13)
    wh, ww = rng.integers(4, step_y - 2), rng.integers(3, step_x - 3)
    glass = np.clip(np.asarray(colour) * rng.uniform(0.25, 0.45), 0, 255)
    for yy in range(y0 + 3, y0 + h - wh, step_y):
        for xx in range(x0 + 3, x0 + w - ww, step_x):
            ya, xa, yb, xb = max(yy, 0), max(xx, 0), min(yy + wh, c.h), min(xx + ww, c.w)
            if ya < yb and xa < xb and c.label[ya, xa] == BUILDING:
                c.image[ya:yb, xa:xb] = glass


def _tiles(c: _Canvas, st: _Street, side: int, colour) -> None:
    """Paving: darker seams every few pixels on the sidewalk (texture, not a label)."""
    seam = np.clip(np.asarray(colour) - 35, 0, 255)
    y0 = int(st.horizon) + 1
    region = c.label[y0:] == SIDEWALK
    period = int(c.rng.integers(5, 8))
    rows = (np.arange(y0, c.h) % period == 0)[:, None]
    cols = (np.arange(c.w) % period == 0)[None, :]
    seams = region & (rows | cols)
    c.image[y0:][seams] = seam


def _lane_marks(c: _Canvas, st: _Street) -> None:
    y = st.horizon + 4
    while y < c.h:
        s = st.scale(y)
        length = c.u * (3 + 14 * s)
        left, right = st.road_span(y)
        x = (left + right) / 2
        wdt = max(1.0, 3 * s)
        c.rect(y, x - wdt / 2, length, wdt, (215, 215, 205), ROAD, noise=4)
        y += length * 2.2


def _beyond_sidewalk(c: _Canvas, st: _Street, side: int) -> None:
    """Terrain, a low wall or a fence between the sidewalk and the buildings."""
    rng, h, hz = c.rng, c.h, st.horizon
    far = st.walk_span(hz + 1, side)[1 if side > 0 else 0]
    near = st.walk_span(h, side)[1 if side > 0 else 0]
    if rng.random() < PRESENCE[TERRAIN]:
        depth = rng.uniform(0.15, 0.5) * st.walk * side
        poly = [(far, hz), (far + depth * 0.05, hz), (near + depth, h), (near, h)]
        c.fill_poly(poly, _jitter(rng, (105, 125, 65), 12), TERRAIN, noise=14, kind="smooth")
    for cls, prob in ((WALL, PRESENCE[WALL]), (FENCE, PRESENCE[FENCE])):
        if rng.random() >= prob / 2:  # two sides per scene
            continue
        y_far, y_near = hz + rng.uniform(2, 10), min(h, hz + (h - hz) * rng.uniform(0.35, 1.0))
        x_far = st.walk_span(y_far, side)[1 if side > 0 else 0]
        x_near = st.walk_span(y_near, side)[1 if side > 0 else 0]
        hf, hn = c.u * (28 * st.scale(y_far) + 3), c.u * (28 * st.scale(y_near) + 3)
        poly = [(x_far, y_far - hf), (x_near, y_near - hn), (x_near, y_near), (x_far, y_far)]
        if cls == WALL:
            colour = _pick(rng, FACADES)  # the same colours as buildings: texture tells them apart
            c.fill_poly(poly, colour, WALL, noise=4)
            _bricks(c, colour, poly)
        else:
            _fence(c, poly)


def _poly_box(poly, c: _Canvas):
    pts = np.round(np.asarray(poly)).astype(np.int32)
    x0, y0 = np.maximum(pts.min(0), 0)
    x1, y1 = np.minimum(pts.max(0) + 1, [c.w, c.h])
    return int(y0), int(x0), int(y1), int(x1)


def _bricks(c: _Canvas, colour, poly) -> None:
    y0, x0, y1, x1 = _poly_box(poly, c)
    if y0 >= y1 or x0 >= x1:
        return
    mortar = np.clip(np.asarray(colour) + 40, 0, 255)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    joints = (ys % 4 == 0) | (((xs + 4 * ((ys // 4) % 2)) % 8) == 0)
    sel = joints & (c.label[y0:y1, x0:x1] == WALL)
    c.image[y0:y1, x0:x1][sel] = mortar


def _fence(c: _Canvas, poly) -> None:
    """A lattice of thin diagonal bars over whatever lies behind; the whole panel is fence."""
    rng = c.rng
    y0, x0, y1, x1 = _poly_box(poly, c)
    if y0 >= y1 or x0 >= x1:
        return
    local = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(local, [np.round(np.asarray(poly)).astype(np.int32) - [x0, y0]], 1)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    period = int(rng.integers(4, 7))
    bars = ((xs + ys) % period == 0) | ((xs - ys) % period == 0)
    m = local.astype(bool)
    behind = c.image[y0:y1, x0:x1] * 0.7
    bar = _pick(rng, [(120, 120, 120), (70, 100, 70), (110, 80, 60)])
    patch = np.where(bars[..., None], bar, behind)
    c.image[y0:y1, x0:x1][m] = patch[m]
    c.label[y0:y1, x0:x1][m] = FENCE


def _tree(c: _Canvas, st: _Street, y_ground: float, x: float) -> None:
    rng = c.rng
    s = c.u * (st.scale(y_ground) * rng.uniform(0.8, 1.3) + 0.1)
    r = 60 * s
    trunk_h = 40 * s
    c.rect(y_ground - trunk_h, x - 1.5 * s, trunk_h, max(1.0, 3 * s), _jitter(rng, (80, 60, 40)), VEGETATION)
    cy = y_ground - trunk_h - r * 0.6
    size = int(3 * r) + 2
    blobs = [(size // 2 + rng.normal(0, r / 2.5), size // 2 + rng.normal(0, r / 3), r * rng.uniform(0.45, 0.8))
             for _ in range(rng.integers(3, 8))]  # fmt: skip

    def draw(m):
        for bx, by, br in blobs:
            cv2.circle(m, (int(bx), int(by)), max(1, int(br)), 1, -1)

    colour = _jitter(rng, (70, 115, 55), 12)
    local = np.zeros((size, size), np.uint8)
    draw(local)
    c.paint(int(cy - size / 2), int(x - size / 2), local, c.texture((size, size), colour, 22, "speckle"), VEGETATION)


def _pole(c: _Canvas, st: _Street, y: float, x: float) -> None:
    """A thin pole; some carry a traffic sign or a traffic light (context for both rare classes)."""
    rng = c.rng
    s = st.scale(y)
    height = c.u * (50 + 90 * s) * rng.uniform(0.8, 1.2)
    width = max(2.0, c.u * (2.5 + 5 * s))
    colour = _jitter(rng, (110, 110, 115), 14)
    c.rect(y - height, x - width / 2, height, width, colour, POLE, noise=4)
    top = y - height
    if rng.random() < PRESENCE[TRAFFIC_LIGHT]:
        lw, lh = c.u * (8 + 10 * s), c.u * (17 + 26 * s)
        c.rect(top - lh * 0.2, x - lw / 2, lh, lw, _jitter(rng, (35, 35, 30), 6), TRAFFIC_LIGHT, noise=3)
        lit = rng.integers(3)
        for k, lamp in enumerate([(230, 40, 30), (240, 200, 40), (40, 220, 90)]):
            ly = top - lh * 0.2 + lh * (k + 0.5) / 3
            r = max(1, int(lw * 0.3))
            colour_k = lamp if k == lit else (60, 60, 55)
            c.shape(ly - r, x - r, 2 * r + 1, 2 * r + 1, lambda m, r=r: cv2.circle(m, (r, r), r, 1, -1),
                    colour_k, TRAFFIC_LIGHT, noise=3)  # fmt: skip
    elif rng.random() < 0.75:
        size = c.u * (11 + 20 * s)
        sy = top + rng.uniform(0, height * 0.3)
        kind = rng.integers(3)
        rim = _pick(rng, [(200, 30, 30), (30, 70, 190), (230, 190, 30)])
        n = int(size)

        def outline(m, inset=0):
            k = n - 1
            if kind == 0:
                cv2.circle(m, (k // 2, k // 2), max(1, k // 2 - inset), 1, -1)
            elif kind == 1:
                tri = np.array([[k // 2, inset], [inset, k - inset], [k - inset, k - inset]], np.int32)
                cv2.fillPoly(m, [tri], 1)
            else:
                cv2.rectangle(m, (inset, inset), (k - inset, k - inset), 1, -1)

        c.shape(sy, x - size / 2, n, n, outline, rim, TRAFFIC_SIGN, noise=4)
        inner = max(2, n // 4)
        face = np.zeros((n, n), np.uint8)
        outline(face, inner)
        c.paint(int(round(sy)), int(round(x - size / 2)), face, c.texture((n, n), (235, 235, 230), 4), TRAFFIC_SIGN)


def _wheels(c: _Canvas, y: float, xs, r: float, label: int, ring: bool = False) -> None:
    for wx in xs:
        ri = max(1, int(round(r)))
        thickness = max(2, ri // 3) if ring else -1
        c.shape(y - 2 * ri - 1, wx - ri, 2 * ri + 2, 2 * ri + 2,
                lambda m, ri=ri, t=thickness: cv2.circle(m, (ri, ri), ri, 1, t), (25, 25, 25), label, noise=3)  # fmt: skip


def _car(c: _Canvas, st: _Street, y: float, x: float) -> None:
    rng = c.rng
    s = st.scale(y)
    h = c.u * (10 + 38 * s) * rng.uniform(0.85, 1.15)
    w = h * rng.uniform(1.5, 2.2)
    colour = _pick(rng, VEHICLE_COLOURS)
    body_top = y - h * 0.62
    c.shape(body_top, x - w / 2, h * 0.55, w,
            lambda m: cv2.rectangle(m, (0, 0), (m.shape[1] - 1, m.shape[0] - 1), 1, -1), colour, CAR)  # fmt: skip
    cabin = [(x - w * 0.35, body_top), (x - w * 0.22, y - h), (x + w * 0.22, y - h), (x + w * 0.38, body_top)]
    c.fill_poly(cabin, colour, CAR, noise=5)
    glass = [
        (x - w * 0.3, body_top),
        (x - w * 0.2, y - h * 0.93),
        (x + w * 0.2, y - h * 0.93),
        (x + w * 0.33, body_top),
    ]
    c.fill_poly(glass, _jitter(rng, (50, 65, 85), 8), CAR, noise=4)
    _wheels(c, y, (x - w * 0.3, x + w * 0.3), h * 0.2, CAR)


def _truck(c: _Canvas, st: _Street, y: float, x: float) -> None:
    rng = c.rng
    s = st.scale(y)
    h = c.u * (14 + 40 * s) * rng.uniform(0.9, 1.1)
    w = h * rng.uniform(1.8, 2.4)
    box = _pick(rng, [(225, 225, 220), (40, 70, 160), (180, 40, 30), (230, 140, 40)])
    direction = 1 if rng.random() < 0.5 else -1
    cab_w = w * 0.28
    cargo_x = x - w / 2 if direction > 0 else x - w / 2 + cab_w
    c.rect(y - h, cargo_x, h * 0.85, w - cab_w, box, TRUCK, noise=4)
    # Horizontal ribs on the cargo box: trucks' texture.
    y0, x0 = int(y - h), int(cargo_x)
    for k in range(1, 6):
        c.rect(y0 + k * h * 0.14, x0, 1, w - cab_w, np.clip(box - 50, 0, 255), TRUCK, noise=3)
    cab_x = x + w / 2 - cab_w if direction > 0 else x - w / 2
    cab = _pick(rng, VEHICLE_COLOURS)
    c.rect(y - h * 0.7, cab_x, h * 0.55, cab_w, cab, TRUCK)
    c.rect(y - h * 0.66, cab_x + cab_w * 0.15, h * 0.2, cab_w * 0.7, _jitter(rng, (50, 65, 85), 8), TRUCK)
    _wheels(c, y, (x - w * 0.32, x - w * 0.15, x + w * 0.35), h * 0.14, TRUCK)


def _bus(c: _Canvas, st: _Street, y: float, x: float) -> None:
    rng = c.rng
    s = st.scale(y)
    h = c.u * (16 + 44 * s) * rng.uniform(0.9, 1.1)
    w = h * rng.uniform(2.4, 3.2)
    colour = _pick(rng, [(230, 200, 40), (190, 40, 40), (40, 90, 170), (225, 225, 225)])
    c.rect(y - h * 0.95, x - w / 2, h * 0.85, w, colour, BUS, noise=4)
    win_h, n = h * 0.3, 6
    for k in range(n):
        wx = x - w / 2 + w * (k + 0.15) / n
        c.rect(y - h * 0.85, wx, win_h, w / n * 0.7, _jitter(rng, (45, 60, 80), 6), BUS)
    c.rect(y - h * 0.5, x - w / 2 + w * 0.05, h * 0.4, w * 0.06, _jitter(rng, (45, 60, 80), 6), BUS)
    _wheels(c, y, (x - w * 0.33, x + w * 0.33), h * 0.14, BUS)


def _train(c: _Canvas, st: _Street, y: float) -> None:
    """A tram spanning much of the street, on rails (void) and under a catenary wire."""
    rng = c.rng
    s = st.scale(y)
    h = c.u * (18 + 44 * s) * rng.uniform(0.9, 1.1)
    left, right = st.road_span(y)
    w = (right - left) * rng.uniform(0.6, 0.95)
    x0 = left + rng.uniform(0, (right - left) - w)
    for dy in (0.0, 2.0):
        c.rect(y + dy, left, max(1.0, 2 * s), right - left, (140, 135, 130), IGNORE, noise=3)
    colour = _pick(rng, [(230, 230, 225), (200, 60, 40), (240, 210, 60)])
    c.rect(y - h, x0, h * 0.95, w, colour, TRAIN, noise=4)
    stripe = _pick(rng, [(40, 40, 45), (30, 90, 50), (160, 30, 30)])
    c.rect(y - h * 0.25, x0, max(1.0, h * 0.07), w, stripe, TRAIN, noise=3)
    cars = max(2, int(w / (h * 1.6)))
    for k in range(cars * 3):
        wx = x0 + w * (k + 0.2) / (cars * 3)
        c.rect(y - h * 0.82, wx, h * 0.35, w / (cars * 3) * 0.6, _jitter(rng, (45, 60, 80), 6), TRAIN)
    c.rect(y - h * 1.25, x0 + w * 0.3, h * 0.25, max(1.0, s * 2), (50, 50, 50), TRAIN, noise=2)


def _person(c: _Canvas, st: _Street, y: float, x: float, label: int = PERSON, height: float | None = None) -> None:
    rng = c.rng
    s = st.scale(y)
    h = height if height is not None else c.u * (18 + 60 * s) * rng.uniform(0.85, 1.15)
    w = h * 0.3
    skin = _pick(rng, [(225, 185, 150), (170, 120, 90), (110, 75, 55)])
    torso = _pick(rng, CLOTHES)
    legs = _pick(rng, CLOTHES)
    if label == PERSON:
        c.rect(y - h * 0.48, x - w * 0.35, h * 0.48, w * 0.28, legs, label)
        c.rect(y - h * 0.48, x + w * 0.07, h * 0.48, w * 0.28, legs, label)
    c.shape(y - h * 0.82, x - w / 2, h * 0.36, w,
            lambda m: cv2.ellipse(m, (m.shape[1] // 2, m.shape[0] // 2),
                                  (m.shape[1] // 2, m.shape[0] // 2), 0, 0, 360, 1, -1), torso, label)  # fmt: skip
    r = max(1, int(h * 0.09))
    c.shape(y - h * 0.82 - 2 * r, x - r, 2 * r + 1, 2 * r + 1, lambda m: cv2.circle(m, (r, r), r, 1, -1), skin, label)


def _two_wheeler(c: _Canvas, st: _Street, y: float, x: float, motor: bool, rider: bool) -> None:
    rng = c.rng
    s = st.scale(y)
    r = c.u * ((4.5 + 12 * s) if motor else (4 + 11 * s)) * rng.uniform(0.9, 1.1)
    gap = r * 2.6
    label = MOTORCYCLE if motor else BICYCLE
    _wheels(c, y, (x - gap / 2, x + gap / 2), r, label, ring=not motor)
    colour = _pick(rng, VEHICLE_COLOURS)
    if motor:
        body = [(x - gap * 0.45, y - r), (x - gap * 0.2, y - 2.1 * r), (x + gap * 0.35, y - 2.0 * r),
                (x + gap * 0.45, y - r)]  # fmt: skip
        c.fill_poly(body, colour, label, noise=4)
        c.rect(y - 2.6 * r, x + gap * 0.3, 0.7 * r, max(1.0, r * 0.3), (30, 30, 30), label)
    else:
        t = max(2, int(r / 4))
        frame = np.array([[-gap / 2, -r], [0, -r], [gap * 0.25, -2 * r], [-gap * 0.2, -2 * r], [-gap / 2, -r]])
        size = int(gap + 2 * r) + 2
        off = np.array([size / 2, size - 1])
        pts = np.round(frame + off).astype(np.int32)
        c.shape(y - size + 1, x - size / 2, size, size,
                lambda m: cv2.polylines(m, [pts], False, 1, t), colour, label, noise=4)  # fmt: skip
    if rider:
        _person(c, st, y - 1.6 * r, x, label=RIDER, height=r * 5.0)


def _clutter(c: _Canvas, st: _Street, y: float, x: float) -> None:
    """Unlabelled street furniture (bins, boxes, bollards): void, as in Cityscapes' 'static'."""
    rng = c.rng
    s = st.scale(y)
    h, w = c.u * (6 + 20 * s) * rng.uniform(0.6, 1.4), c.u * (5 + 14 * s) * rng.uniform(0.6, 1.4)
    c.rect(y - h, x - w / 2, h, w, _pick(rng, VEHICLE_COLOURS + CLOTHES), IGNORE, noise=6)


def _objects(c: _Canvas, st: _Street) -> None:
    """Place every object on the ground plane, then draw them from far to near."""
    rng, h, hz = c.rng, c.h, st.horizon
    items: list[tuple[float, object]] = []

    def ground(lo: float = 0.04, hi: float = 1.0) -> float:
        return hz + (h - hz) * rng.uniform(lo, hi) ** 0.8

    def on_road(y: float) -> float:
        left, right = st.road_span(y)
        return rng.uniform(left + 0.1 * (right - left), right - 0.1 * (right - left))

    def on_walk(y: float) -> float:
        lo, hi = st.walk_span(y, -1 if rng.random() < 0.5 else 1)
        return rng.uniform(lo, hi)

    for _ in range(rng.integers(1, 7) if rng.random() < 0.92 else 0):
        y = ground(0.05, 0.85)
        x = on_road(y)
        items.append((y, lambda y=y, x=x: _car(c, st, y, x)))
    for _ in range(rng.integers(1, 8) if rng.random() < 0.9 else 0):
        y = ground(0.05, 0.9)
        x = on_walk(y)
        items.append((y, lambda y=y, x=x: _pole(c, st, y, x)))
    for side in (-1, 1):  # rows of street trees along the outer edge of the sidewalks
        if rng.random() < 0.85:
            y = hz + rng.uniform(1, 4)
            while y < h * 1.05:
                edge = st.walk_span(y, side)[0 if side < 0 else 1]
                x = edge + rng.normal(0, 3)
                items.append((y, lambda y=y, x=x: _tree(c, st, y, x)))
                y += c.u * rng.uniform(4, 14) + (y - hz) * rng.uniform(0.3, 0.8)
    for _ in range(rng.integers(1, 9) if rng.random() < PRESENCE[PERSON] else 0):
        y = ground(0.05, 0.95)
        x = on_walk(y) if rng.random() < 0.8 else on_road(y)
        items.append((y, lambda y=y, x=x: _person(c, st, y, x)))
    for cls, draw, max_count in ((TRUCK, _truck, 2), (BUS, _bus, 1)):
        for _ in range(rng.integers(1, max_count + 1) if rng.random() < PRESENCE[cls] else 0):
            y = ground(0.1, 0.8)
            x = on_road(y)
            items.append((y, lambda y=y, x=x, draw=draw: draw(c, st, y, x)))
    if rng.random() < PRESENCE[TRAIN]:
        y = ground(0.1, 0.6)
        items.append((y, lambda y=y: _train(c, st, y)))
    if rng.random() < PRESENCE[MOTORCYCLE]:
        for _ in range(rng.integers(1, 3)):
            y = ground(0.05, 0.95)
            x, ridden = on_road(y), rng.random() < 0.6
            items.append((y, lambda y=y, x=x, r=ridden: _two_wheeler(c, st, y, x, True, r)))
    if rng.random() < PRESENCE[BICYCLE]:
        for _ in range(rng.integers(1, 4)):
            y = ground(0.05, 0.95)
            x, ridden = (on_road(y), True) if rng.random() < 0.4 else (on_walk(y), False)
            items.append((y, lambda y=y, x=x, r=ridden: _two_wheeler(c, st, y, x, False, r)))
    if rng.random() < PRESENCE[RIDER]:  # riders also ride through scenes without parked two-wheelers
        y = ground(0.05, 0.95)
        motor = rng.random() < 0.5
        x = on_road(y)
        items.append((y, lambda y=y, x=x, m=motor: _two_wheeler(c, st, y, x, m, True)))
    for _ in range(rng.integers(0, 3)):
        y = ground(0.1, 0.95)
        x = on_walk(y)
        items.append((y, lambda y=y, x=x: _clutter(c, st, y, x)))
    for _, draw in sorted(items, key=lambda item: item[0]):
        draw()


def _shade(c: _Canvas, rng: np.random.Generator) -> None:
    """Cast 1-3 large soft shadows over everything below the sky (appearance only).

    Each shadow is an ellipse with a feathered edge; inside, the image is blurred (sigma 3.5 px at
    192 rows: window grids, leaf speckle, paving seams and bricks are gone), pulled halfway to grey
    and darkened to 35-60% of its brightness.
    """
    h, w, u = c.h, c.w, c.u
    mask = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(1, 4)):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(h * 0.3, h)))
        axes = (int(w * rng.uniform(0.15, 0.4)), int(h * rng.uniform(0.2, 0.45)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 4 * u) * (c.label != SKY)
    blurred = cv2.GaussianBlur(c.image, (0, 0), 3.5 * u)
    grey = blurred.mean(axis=2, keepdims=True)
    shaded = (0.5 * blurred + 0.5 * grey) * rng.uniform(0.35, 0.6)
    m = mask[..., None]
    c.image = c.image * (1 - m) + shaded * m


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    shade: float = 0.0,
    look: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one street scene.

    Args:
        rng: The random generator that decides everything in the scene (deterministic per seed).
        height: Image height in pixels.
        width: Image width in pixels.
        shade: Probability that the scene gets soft shadows that hide textures (`_shade`).
        look: The generator of the shadows (required when `shade > 0`); kept apart from `rng`
            so that the label map does not depend on `shade`.

    Returns:
        image: uint8 array (height, width, 3), RGB.
        label: uint8 array (height, width) of train ids 0..18 and `IGNORE` (255).
    """
    c = _Canvas(height, width, rng)
    st = _Street(c)
    _background(c, st)
    _objects(c, st)
    if rng.random() < 0.55:  # the ego-vehicle's bonnet along the bottom edge: void
        top = height * rng.uniform(0.86, 0.94)
        bonnet = [(0, height), (width * 0.1, top), (width * 0.9, top), (width, height)]
        c.fill_poly(bonnet, _jitter(rng, (35, 35, 40), 10), IGNORE, noise=5)
    if shade > 0:
        if look is None:
            raise ValueError("render_scene: shade > 0 needs its own generator `look`")
        if look.random() < shade:
            _shade(c, look)
    # Lighting and sensor noise over the whole frame.
    gain, bias = rng.uniform(0.75, 1.2), rng.uniform(-20, 20)
    image = c.image * gain + bias + rng.normal(0.0, 6.0, c.image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), c.label
