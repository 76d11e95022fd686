"""Procedural anthropomorphic 2-D phantoms in HU: abdomen, thorax and head "patients".

No real CT large enough for training installs offline, so the embedded dataset draws its anatomy
from seeds. A *patient* is a fixed set of random anatomical parameters (body size, organ shapes and
positions, vessel trees, lesions, texture fields); its slices are neighbouring axial positions ``z``
(``slice_mm`` apart) in which organs, vessels and lesions move and change size smoothly, and whose
texture comes from one 3-D random field, so neighbouring slices are correlated like real ones.

HU values follow the usual clinical ranges (portal-venous contrast phase): air −1000, lung −860,
fat −100, water/CSF 0–10, muscle 50, liver 100, spleen 110, kidney cortex 160, enhanced vessels
180–220, cancellous bone 200–400, cortical bone 800–1500. Texture matters for a study of texture
and perceptual losses, so every tissue carries spatially correlated texture: parenchymal mottle,
fat septa (zero crossings of band-pass noise), trabecular bone (thresholded band-pass noise),
branching vessel trees (tapering capsules), low-contrast lesions and lung nodules.

Everything is rasterised on the requested grid (the simulator asks for the 2× finer forward-
projection grid and averages 2×2 blocks for the output grid). Hand-written because no library
generates textured anthropomorphic CT slices; the approach (ellipse-based anatomy plus correlated
texture) follows the XCAT/ForBild tradition in spirit, not in code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from benchmark.data.simulate import quantize_hu

PhantomKind = Literal["abdomen", "thorax", "head"]
PHANTOM_KINDS: tuple[PhantomKind, ...] = ("abdomen", "thorax", "head")

# HU of the tissues (portal-venous phase).
HU = {
    "air": -1000.0,
    "lung": -860.0,
    "fat": -100.0,
    "water": 0.0,
    "csf": 8.0,
    "bowel_fluid": 15.0,
    "muscle": 50.0,
    "skin": 40.0,
    "liver": 100.0,
    "spleen": 110.0,
    "kidney_cortex": 165.0,
    "kidney_medulla": 120.0,
    "aorta": 210.0,
    "ivc": 140.0,
    "portal": 180.0,
    "heart_blood": 200.0,
    "myocardium": 90.0,
    "gray_matter": 40.0,
    "white_matter": 28.0,
    "cancellous": 260.0,
    "cortical": 1100.0,
    "skull": 1350.0,
    "diploe": 650.0,
}


@dataclass(frozen=True)
class Grid:
    """A square pixel grid: ``size`` pixels of ``pixel_mm``; origin at the centre, y up."""

    size: int
    pixel_mm: float

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` in mm, each ``(size, size)`` float64, ``[row, col]`` indexing."""
        c = (np.arange(self.size, dtype=np.float64) - (self.size - 1) / 2) * self.pixel_mm
        return np.meshgrid(c, -c, indexing="xy")


# ------------------------------------------------------------------------------------------------
# Shapes and texture
# ------------------------------------------------------------------------------------------------


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
    """Normalised radius ``r`` of the rotated ellipse (inside where ``r < 1``)."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    u = (dx * c + dy * s) / a
    v = (-dx * s + dy * c) / b
    return np.sqrt(u * u + v * v)


def soft_mask(r: np.ndarray, edge: float = 0.0) -> np.ndarray:
    """Inside-mask of a normalised radius; ``edge`` > 0 gives a linear ramp of that width (in r)."""
    if edge <= 0:
        return (r < 1).astype(np.float64)
    return np.clip((1 - r) / edge + 0.5, 0, 1)


def texture_fields(rng: np.random.Generator, n_z: int, grid: Grid, slice_mm: float) -> dict[str, np.ndarray]:
    """Correlated Gaussian random fields ``(n_z, H, W)``, unit variance, at three scales.

    ``fine`` (≈0.8 mm), ``medium`` (≈2.5 mm) and ``coarse`` (≈8 mm) correlation lengths, smoothed in 3-D
    so neighbouring slices share texture; ``band`` = fine − medium (band-pass, for septa and trabeculae).
    """
    out: dict[str, np.ndarray] = {}
    for name, mm in (("fine", 0.8), ("medium", 2.5), ("coarse", 8.0)):
        sig = max(mm / grid.pixel_mm, 0.6)
        sig_z = max(mm / slice_mm, 0.3)
        f = rng.standard_normal((n_z, grid.size, grid.size))
        f = ndimage.gaussian_filter(f, (sig_z, sig, sig), mode=("nearest", "wrap", "wrap"))
        out[name] = (f - f.mean()) / (f.std() + 1e-12)
    band = out["fine"] - out["medium"]
    out["band"] = band / (band.std() + 1e-12)
    return out


def septa(band: np.ndarray, width: float = 0.25) -> np.ndarray:
    """A curvilinear network in [0, 1]: the zero crossings of band-pass noise."""
    return np.exp(-((band / width) ** 2))


def trabecular(band: np.ndarray, medium: np.ndarray) -> np.ndarray:
    """Trabecular bone pattern in [0, 1]: plates where band-pass noise exceeds a spatially varying level."""
    return (band + 0.3 * medium > 0.35).astype(np.float64)


@dataclass(frozen=True)
class Segment:
    x0: float
    y0: float
    x1: float
    y1: float
    r: float


def vessel_tree(
    rng: np.random.Generator, x0: float, y0: float, angle: float, length: float, radius: float, depth: int
) -> list[Segment]:
    """A random binary branching tree of tapering segments (Murray-like radius ratio 0.79)."""
    segs: list[Segment] = []
    stack = [(x0, y0, angle, length, radius, depth)]
    while stack:
        x, y, a, ln, r, d = stack.pop()
        a2 = a + rng.normal(0, 0.25)
        x2, y2 = x + ln * math.cos(a2), y + ln * math.sin(a2)
        segs.append(Segment(x, y, x2, y2, r))
        if d > 0 and r > 0.45:
            spread = rng.uniform(0.35, 0.75)
            for sgn in (-1, 1):
                stack.append((x2, y2, a2 + sgn * spread, ln * rng.uniform(0.6, 0.85), r * 0.79, d - 1))
    return segs


def draw_segments(img: np.ndarray, x: np.ndarray, y: np.ndarray, segs: list[Segment], value: float,
                  mask: np.ndarray | None, pixel_mm: float) -> None:
    """Paint capsules (segments with round caps) of HU ``value`` into ``img`` where ``mask`` allows.

    Edges are anti-aliased over one pixel; each capsule is rasterised inside its bounding box only.
    """
    xs, ys = x[0], y[:, 0]
    for s in segs:
        pad = s.r + 2 * pixel_mm
        c0 = np.searchsorted(xs, min(s.x0, s.x1) - pad)
        c1 = np.searchsorted(xs, max(s.x0, s.x1) + pad)
        r0 = np.searchsorted(-ys, -(max(s.y0, s.y1) + pad))
        r1 = np.searchsorted(-ys, -(min(s.y0, s.y1) - pad))
        if c1 <= c0 or r1 <= r0:
            continue
        px, py = x[r0:r1, c0:c1], y[r0:r1, c0:c1]
        dx, dy = s.x1 - s.x0, s.y1 - s.y0
        ll = dx * dx + dy * dy + 1e-9
        t = np.clip(((px - s.x0) * dx + (py - s.y0) * dy) / ll, 0, 1)
        d = np.hypot(px - (s.x0 + t * dx), py - (s.y0 + t * dy))
        w = np.clip((s.r - d) / pixel_mm + 0.5, 0, 1)
        if mask is not None:
            w = w * mask[r0:r1, c0:c1]
        sub = img[r0:r1, c0:c1]
        sub += w * (value - sub)


def shift_segments(segs: list[Segment], dx: float, dy: float, scale: float) -> list[Segment]:
    return [Segment(s.x0 + dx, s.y0 + dy, s.x1 + dx, s.y1 + dy, s.r * scale) for s in segs]


# ------------------------------------------------------------------------------------------------
# Patients
# ------------------------------------------------------------------------------------------------


class Painter:
    """Accumulates tissues into one HU image: ``paint(mask, hu)`` blends ``hu`` where the mask is 1."""

    def __init__(self, grid: Grid, background: float = HU["air"]) -> None:
        self.grid = grid
        self.x, self.y = grid.coords()
        self.img = np.full((grid.size, grid.size), background, dtype=np.float64)

    def paint(self, mask: np.ndarray, hu: np.ndarray | float) -> None:
        self.img += mask * (hu - self.img)

    def ell(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
        edge = self.grid.pixel_mm / max(min(a, b), 1e-3)
        return soft_mask(ellipse(self.x, self.y, cx, cy, a, b, angle), edge)


@dataclass
class SliceContext:
    """What a slice painter needs: the grid, the slice position and this slice's texture fields."""

    painter: Painter
    z: float  # mm from the patient's central slice
    tex: dict[str, np.ndarray]  # (H, W) fields of this slice
    rng: np.random.Generator  # per-patient parameters (drawn before any slice is painted)


def _body(p: Painter, tex: dict[str, np.ndarray], a: float, b: float, fat_mm: float, muscle_mm: float) -> np.ndarray:
    """Skin, subcutaneous fat with septa and a muscle wall; returns the mask inside the muscle wall."""
    fat_tex = HU["fat"] + 8 * tex["medium"] + 35 * septa(tex["band"])
    p.paint(p.ell(0, 0, a, b), HU["skin"] + 6 * tex["fine"])
    p.paint(p.ell(0, 0, a - 2.5, b - 2.5), fat_tex)
    muscle = HU["muscle"] + 6 * tex["fine"] + 4 * tex["medium"]
    p.paint(p.ell(0, -4, a - fat_mm, b - fat_mm * 0.9), muscle)
    inner = p.ell(0, -4, a - fat_mm - muscle_mm, b - fat_mm * 0.9 - muscle_mm)
    p.paint(inner, HU["fat"] + 10 * tex["medium"] + 25 * septa(tex["band"], 0.3))
    return inner


def _vertebra(p: Painter, tex: dict[str, np.ndarray], cx: float, cy: float, r: float) -> None:
    """Vertebral body (cortical shell, trabecular core), canal with CSF, posterior elements."""
    tr = trabecular(tex["band"], tex["medium"])
    cancellous = HU["cancellous"] - 90 + 420 * tr + 20 * tex["fine"]
    p.paint(p.ell(cx, cy - 1.8 * r, 0.45 * r, 1.1 * r), HU["cortical"] * 0.8 + 80 * tex["fine"])  # spinous process
    p.paint(p.ell(cx - 0.7 * r, cy - 1.05 * r, 0.35 * r, 0.65 * r, 0.6), HU["cortical"] * 0.75)  # laminae
    p.paint(p.ell(cx + 0.7 * r, cy - 1.05 * r, 0.35 * r, 0.65 * r, -0.6), HU["cortical"] * 0.75)
    p.paint(p.ell(cx, cy - 1.05 * r, 0.45 * r, 0.42 * r), HU["csf"] + 4 * tex["fine"])  # canal
    p.paint(p.ell(cx, cy, r, 0.88 * r), HU["cortical"] + 100 * tex["fine"])
    p.paint(p.ell(cx, cy, r - 2.0, 0.88 * r - 2.0), cancellous)


def _ribs(p: Painter, tex: dict[str, np.ndarray], a: float, b: float, angles: np.ndarray, r: float) -> None:
    for ang in angles:
        cx, cy = a * math.cos(ang), b * math.sin(ang) - 4
        p.paint(p.ell(cx, cy, r * 1.5, r, ang + math.pi / 2), HU["cortical"] * 0.9 + 60 * tex["fine"])
        p.paint(p.ell(cx, cy, r * 1.5 - 1.2, r - 1.2, ang + math.pi / 2), HU["cancellous"] + 60 * tex["medium"])


class AbdomenPatient:
    """Upper abdomen at the level of liver, spleen and kidneys (portal-venous phase)."""

    def __init__(self, rng: np.random.Generator) -> None:
        u = rng.uniform
        self.a, self.b = u(150, 180), u(110, 135)
        self.fat, self.muscle = u(10, 28), u(7, 12)
        self.spine_r = u(17, 21)
        self.liver = (u(-75, -55), u(5, 25), u(60, 75), u(55, 70), u(-0.3, 0.1))
        self.spleen = (u(70, 90), u(-10, 15), u(22, 30), u(38, 48), u(-0.6, -0.3))
        self.kidney_dx, self.kidney_y = u(55, 70), u(-50, -35)
        self.rib_angles = np.sort(u(-0.2, math.pi + 0.2, int(rng.integers(6, 10))))
        self.liver_tree = vessel_tree(rng, self.liver[0] + 25, self.liver[1] - 5, math.pi * u(0.7, 1.0), 22, 3.5, 5)
        self.bowel = [(u(-30, 60), u(-10, 60), u(9, 18), rng.integers(0, 3)) for _ in range(int(rng.integers(4, 8)))]
        n_les = int(rng.integers(1, 4))
        self.lesions = [
            (self.liver[0] + u(-30, 30), self.liver[1] + u(-30, 30), u(-6, 6), u(3, 10), u(-35, -12)) for _ in range(n_les)
        ]

    def paint(self, ctx: SliceContext) -> None:
        p, tex, z = ctx.painter, ctx.tex, ctx.z
        s = 1 + 0.004 * z  # organs grow slowly towards caudal slices
        inner = _body(p, tex, self.a, self.b, self.fat, self.muscle)
        spine_y = -self.b + self.fat + self.muscle + self.spine_r + 22
        # paraspinal muscles
        for sgn in (-1, 1):
            p.paint(p.ell(sgn * 32, spine_y - 18, 24, 20), HU["muscle"] + 6 * tex["fine"] + 5 * tex["band"])
        _vertebra(p, tex, 0, spine_y, self.spine_r)
        _ribs(p, tex, self.a - self.fat - self.muscle / 2, self.b - self.fat * 0.9 - self.muscle / 2, self.rib_angles, 5.0)
        lx, ly, la, lb, lang = self.liver
        liver_hu = HU["liver"] + 7 * tex["medium"] + 4 * tex["fine"] + 5 * tex["coarse"]
        liver = np.maximum(p.ell(lx, ly, la * s, lb * s, lang), p.ell(lx + 30, ly + 25, la * 0.55 * s, lb * 0.45 * s, 0.3))
        liver *= inner
        p.paint(liver, liver_hu)
        draw_segments(p.img, p.x, p.y, shift_segments(self.liver_tree, 0.15 * z, 0.1 * z, 1 - 0.01 * abs(z)),
                      HU["portal"], liver, p.grid.pixel_mm)
        for cx, cy, cz, r, dhu in self.lesions:
            rz = r * r - (z - cz) ** 2
            if rz > 0:
                p.paint(p.ell(cx, cy, math.sqrt(rz), math.sqrt(rz) * 0.9) * liver, HU["liver"] + dhu + 4 * tex["fine"])
        sx, sy, sa, sb, sang = self.spleen
        p.paint(p.ell(sx, sy, sa * s, sb * s, sang) * inner, HU["spleen"] + 6 * tex["medium"] + 4 * tex["fine"])
        for sgn in (-1, 1):
            kx, ky = sgn * self.kidney_dx, self.kidney_y + 0.3 * z
            p.paint(p.ell(kx, ky, 24, 32, sgn * 0.35), HU["kidney_cortex"] + 8 * tex["fine"])
            p.paint(p.ell(kx + sgn * 4, ky, 14, 21, sgn * 0.35), HU["kidney_medulla"] + 10 * tex["medium"])
            p.paint(p.ell(kx + sgn * 10, ky, 5, 9, sgn * 0.35), HU["csf"] + 3 * tex["fine"])
        p.paint(p.ell(8, spine_y + self.spine_r + 12, 11, 11), HU["aorta"] + 3 * tex["fine"])
        p.paint(p.ell(-24, spine_y + self.spine_r + 14, 14, 10), HU["ivc"] + 3 * tex["fine"])
        for bx, by, br, content in self.bowel:
            bx2, by2 = bx + 0.4 * z, by - 0.2 * z
            p.paint(p.ell(bx2, by2, br, br * 0.8) * inner, HU["muscle"] + 5 * tex["fine"])
            lumen = p.ell(bx2, by2, br - 2.5, br * 0.8 - 2.5) * inner
            if content == 0:
                p.paint(lumen, HU["air"])
            elif content == 1:
                p.paint(lumen, HU["bowel_fluid"] + 6 * tex["medium"])
            else:  # air-fluid level: air anterior (up) in a supine patient
                p.paint(lumen, np.where(p.y > by2 + 0.2 * br, HU["air"], HU["bowel_fluid"] + 6 * tex["medium"]))


class ThoraxPatient:
    """Mid thorax: lungs with tapering vessels and nodules, heart, great vessels, ribs and spine."""

    def __init__(self, rng: np.random.Generator) -> None:
        u = rng.uniform
        self.a, self.b = u(155, 185), u(105, 130)
        self.fat, self.muscle = u(8, 22), u(8, 14)
        self.spine_r = u(15, 18)
        self.rib_angles = np.concatenate([np.linspace(-0.35, 1.2, 5), np.linspace(math.pi - 1.2, math.pi + 0.35, 5)])
        self.rib_angles = self.rib_angles + u(-0.05, 0.05, self.rib_angles.size)
        self.heart = (u(5, 25), u(-5, 20), u(55, 70), u(45, 55), u(-0.6, -0.3))
        self.trees = []
        for sgn in (-1, 1):
            for ang in (-1.0, -0.35, 0.35, 1.0):
                a0 = (ang if sgn > 0 else math.pi - ang) + rng.normal(0, 0.1)
                self.trees.append(vessel_tree(rng, sgn * 40, 0.0, a0, 18, 3.2, 5))
        self.nodules = [
            (rng.choice([-1, 1]) * u(50, 110), u(-60, 60), u(-6, 6), u(2, 6), rng.choice([30.0, -600.0], p=[0.7, 0.3]))
            for _ in range(int(rng.integers(1, 5)))
        ]

    def paint(self, ctx: SliceContext) -> None:
        p, tex, z = ctx.painter, ctx.tex, ctx.z
        inner = _body(p, tex, self.a, self.b, self.fat, self.muscle)
        spine_y = -self.b + self.fat + self.muscle + self.spine_r + 18
        la, lb = self.a - self.fat - self.muscle - 8, self.b - self.fat - self.muscle - 8
        lung_hu = HU["lung"] + 25 * tex["medium"] + 15 * tex["fine"] + 20 * tex["coarse"]
        lungs = np.zeros_like(p.img)
        for sgn in (-1, 1):
            lungs = np.maximum(lungs, p.ell(sgn * (la * 0.5 + 6), -4, la * 0.52, lb * 0.98))
        lungs *= inner
        p.paint(lungs, lung_hu)
        for i, tree in enumerate(self.trees):
            draw_segments(p.img, p.x, p.y, shift_segments(tree, 0.2 * z * (1 if i % 2 else -1), 0.15 * z, 1.0),
                          HU["muscle"] - 10, lungs, p.grid.pixel_mm)
        for cx, cy, cz, r, hu in self.nodules:
            rz = r * r - (z - cz) ** 2
            if rz > 0:
                p.paint(p.ell(cx, cy, math.sqrt(rz), math.sqrt(rz)) * lungs, hu + 10 * tex["fine"])
        hx, hy, ha, hb, hang = self.heart
        p.paint(p.ell(hx, hy, ha, hb, hang), HU["myocardium"] + 5 * tex["fine"])
        p.paint(p.ell(hx - 10, hy + 5, ha * 0.55, hb * 0.5, hang), HU["heart_blood"] + 5 * tex["medium"])
        p.paint(p.ell(hx + 15, hy - 8, ha * 0.35, hb * 0.4, hang), HU["heart_blood"] - 30 + 5 * tex["medium"])
        p.paint(p.ell(-12, spine_y + self.spine_r + 11, 11, 11), HU["aorta"] + 3 * tex["fine"])  # descending aorta
        p.paint(p.ell(0, spine_y + self.spine_r + 30, 8, 6), HU["air"])  # oesophagus / main bronchus air
        p.paint(p.ell(0, self.b - self.fat - 6, 12, 6), HU["cortical"] * 0.8 + 80 * tex["fine"])  # sternum
        p.paint(p.ell(0, self.b - self.fat - 6, 10, 4), HU["cancellous"] + 80 * tex["medium"])
        _vertebra(p, tex, 0, spine_y, self.spine_r)
        _ribs(p, tex, self.a - self.fat - self.muscle / 2, self.b - self.fat - self.muscle / 2, self.rib_angles, 5.5)


class HeadPatient:
    """Axial head above the orbits: scalp, skull with diploë, gray/white matter, ventricles, lesions."""

    def __init__(self, rng: np.random.Generator) -> None:
        u = rng.uniform
        self.a, self.b = u(68, 80), u(85, 98)
        self.skull = u(5.5, 8.0)
        self.vent = (u(4, 8), u(18, 26))
        self.lesions = [(u(-40, 40), u(-50, 50), u(-6, 6), u(3, 9), u(-12, 12)) for _ in range(int(rng.integers(1, 3)))]

    def paint(self, ctx: SliceContext) -> None:
        p, tex, z = ctx.painter, ctx.tex, ctx.z
        a, b = self.a * (1 - 0.002 * z), self.b * (1 - 0.002 * z)
        p.paint(p.ell(0, 0, a + 5, b + 5), HU["skin"] + 6 * tex["fine"] + 20 * septa(tex["band"]) - 40)
        p.paint(p.ell(0, 0, a, b), HU["skull"] + 80 * tex["fine"])
        p.paint(p.ell(0, 0, a - self.skull * 0.3, b - self.skull * 0.3), HU["diploe"] + 250 * tex["band"])
        p.paint(p.ell(0, 0, a - self.skull * 0.7, b - self.skull * 0.7), HU["skull"] + 60 * tex["fine"])
        brain = p.ell(0, 0, a - self.skull, b - self.skull)
        p.paint(brain, HU["csf"] + 3 * tex["fine"])  # subarachnoid CSF rim
        cortex = p.ell(0, 0, a - self.skull - 2.5, b - self.skull - 2.5)
        p.paint(cortex, HU["gray_matter"] + 2.5 * tex["fine"] + 2 * tex["medium"])
        # white matter: a lobulated core whose boundary follows coarse noise (gyri-like folding)
        wm_r = ellipse(p.x, p.y, 0, 0, a - self.skull - 14, b - self.skull - 16) + 0.12 * tex["coarse"] + 0.05 * tex["medium"]
        p.paint(soft_mask(wm_r, 0.05) * cortex, HU["white_matter"] + 2 * tex["fine"])
        vw, vl = self.vent
        for sgn in (-1, 1):
            p.paint(p.ell(sgn * (vw + 3), 8 + 0.3 * z, vw, vl, sgn * 0.25), HU["csf"] + 2 * tex["fine"])
        p.paint(p.ell(0, -b + self.skull + 25, 12, 5), HU["csf"])  # cistern
        for cx, cy, cz, r, dhu in self.lesions:
            rz = r * r - (z - cz) ** 2
            if rz > 0:
                p.paint(p.ell(cx, cy, math.sqrt(rz), math.sqrt(rz) * 0.85) * cortex, HU["gray_matter"] + dhu + 2 * tex["fine"])


PATIENT_CLASSES: dict[PhantomKind, Callable[[np.random.Generator], AbdomenPatient | ThoraxPatient | HeadPatient]] = {
    "abdomen": AbdomenPatient,
    "thorax": ThoraxPatient,
    "head": HeadPatient,
}


def patient_kind(index: int) -> PhantomKind:
    """Round-robin mix, abdomen-heavy: A, T, A, H, A, T, A, H, ..."""
    return ("abdomen", "thorax", "abdomen", "head")[index % 4]  # type: ignore[return-value]


def patient_slices(
    seed: int, index: int, n_slices: int, grid: Grid, *, slice_mm: float = 3.0, kind: PhantomKind | None = None
) -> np.ndarray:
    """``n_slices`` neighbouring axial slices ``(n_slices, H, W)`` float32 in HU of patient ``index``.

    Deterministic in ``(seed, index, n_slices, grid, slice_mm, kind)``; the anatomy parameters depend
    only on ``(seed, index, kind)``, so every grid sees the same patient. Painted in float64 and rounded
    to the ``HU_QUANTUM`` grid (:mod:`benchmark.data.simulate`), so the values are the same bytes
    whichever SIMD path numpy takes on this CPU (in float32 they were not on CPUs without AVX2).
    """
    kind = kind or patient_kind(index)
    rng = np.random.default_rng([seed, index, PHANTOM_KINDS.index(kind)])
    anatomy = PATIENT_CLASSES[kind](rng)
    tex_rng = np.random.default_rng([seed, index, 1000 + PHANTOM_KINDS.index(kind)])
    tex = texture_fields(tex_rng, n_slices, grid, slice_mm)
    out = np.empty((n_slices, grid.size, grid.size), dtype=np.float64)
    for k in range(n_slices):
        painter = Painter(grid)
        z = (k - (n_slices - 1) / 2) * slice_mm
        anatomy.paint(SliceContext(painter, z, {n: f[k] for n, f in tex.items()}, rng))
        out[k] = painter.img
    # nothing outside the inscribed circle of the field of view (the projector's support)
    x, y = grid.coords()
    out[:, (x * x + y * y) > (grid.size * grid.pixel_mm / 2 - grid.pixel_mm) ** 2] = HU["air"]
    return quantize_hu(out).astype(np.float32)  # exact: multiples of 1/16 HU


def downsample2(img: np.ndarray) -> np.ndarray:
    """2×2 block mean over the last two axes (partial-volume average of the fine grid)."""
    *lead, h, w = img.shape
    return img.reshape(*lead, h // 2, 2, w // 2, 2).mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)
