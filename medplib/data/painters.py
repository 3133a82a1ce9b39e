"""The eight MeCoVQA modalities: how each paints its structures and renders its look.

CT grey levels of distinct density, MR contrast (T1 or T2), blurred PET uptake, the chest
radiograph's projection, the ultrasound fan and speckle, the endoscopic tunnel, the fundus disc
and dermoscopic skin. Each painter fills a `Canvas` and returns the scene's site; each renderer
turns the finished label map into float pixels in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medplib.data.canvas import Canvas
from medplib.data.shapes import (
    blob,
    box_blur,
    dilate,
    ellipse,
    grid,
    polyline,
    random_point_in,
    smooth_noise,
)

# The names each site can contain: one missing from a scene of that site is truly absent.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "abdomen": (
        "liver",
        "spleen",
        "right kidney",
        "left kidney",
        "aorta",
        "spine",
        "tumor",
        "cyst",
    ),
    "chest": ("right lung", "left lung", "heart", "aorta", "spine", "nodule"),
    "brain": ("brain", "ventricles", "tumor", "edema"),
    "whole body": ("brain", "heart", "liver", "right kidney", "left kidney", "bladder", "tumor"),
    "chest radiograph": ("right lung", "left lung", "heart", "nodule", "pleural effusion"),
    "soft tissue": ("cyst", "tumor", "vessel"),
    "colon": ("polyp", "lumen", "ulcer"),
    "retina": ("optic disc", "macula", "vessels", "hemorrhage", "exudates"),
    "skin": ("lesion", "blue-white veil", "dark globules"),
}
SITE_NAMES = {"chest radiograph": "chest"}  # how a site reads in text

# Every synthetic class name, in a fixed order: position + 1 is its SA-Med2D-style class id.
CLASS_NAMES: tuple[str, ...] = tuple(dict.fromkeys(n for v in VOCABULARY.values() for n in v))


def _j(rng: np.random.Generator, scale: float) -> float:
    return float(rng.uniform(-scale, scale))


def _place_inside(c: Canvas, host: int, r: float) -> tuple[float, float] | None:
    """A point of layer `host` at least ~r (normalised) from its edge, else any point of it."""
    margin = max(1, int(r * c.size / 2 * 0.8))
    inside = ~dilate(~c.own(host), margin)
    return random_point_in(inside, c.rng) or random_point_in(c.own(host), c.rng)


def _lesion_in(c: Canvas, hosts: list[int], name: str, value: float, r: float, irr: float) -> None:
    if not hosts:
        return
    host = hosts[int(c.rng.integers(len(hosts)))]
    at = _place_inside(c, host, r)
    if at is not None:
        region = blob(c.size, c.rng, *at, r, irregularity=irr)
        c.add(region, value, name, parent=host, within=c.own(host))


def _trunk(c: Canvas, fat: float, soft: float) -> tuple[int, np.ndarray, float, float, float]:
    """Axial body section: a fat rim around soft tissue. Returns (soft layer, inner, cy, cx, ry)."""
    rng, s = c.rng, c.size
    cy, cx = _j(rng, 0.05), _j(rng, 0.05)
    ry, rx = rng.uniform(0.6, 0.68), rng.uniform(0.82, 0.9)
    body = c.add(ellipse(s, cy, cx, ry, rx), fat)
    inner = ellipse(s, cy, cx, ry - 0.07, rx - 0.07)
    return c.add(inner, soft, parent=body), inner, cy, cx, ry


def _abdomen(c: Canvas, v: dict[str, float]) -> None:
    """Axial upper abdomen; `v` gives each structure's grey level for the modality."""
    rng, s = c.rng, c.size
    soft, inner, cy, cx, ry = _trunk(c, v["fat"], v["soft"])
    organs: list[int] = []
    if rng.random() < 0.9:  # patient's right is on the image left (radiological convention)
        region = blob(
            s,
            rng,
            cy - 0.12 + _j(rng, 0.05),
            cx - 0.36 + _j(rng, 0.05),
            rng.uniform(0.3, 0.38),
            irregularity=0.1,
            aspect=1.15,
        )
        organs.append(c.add(region, v["liver"], "liver", parent=soft, within=inner))
    if rng.random() < 0.75:
        region = ellipse(s, cy + 0.08 + _j(rng, 0.05), cx + 0.55, 0.2, 0.12, _j(rng, 0.4))
        organs.append(c.add(region, v["spleen"], "spleen", parent=soft, within=inner))
    kidneys = []
    for name, side in (("right kidney", -1), ("left kidney", 1)):
        if rng.random() < 0.8:
            region = ellipse(s, cy + 0.3 + _j(rng, 0.04), cx + side * 0.33, 0.16, 0.1, -0.3 * side)
            kidneys.append(c.add(region, v["kidney"], name, parent=soft, within=inner))
    if rng.random() < 0.55:
        _lesion_in(c, organs + kidneys, "tumor", v["tumor"], rng.uniform(0.08, 0.15), 0.2)
    if rng.random() < 0.3:
        _lesion_in(c, kidneys, "cyst", v["cyst"], rng.uniform(0.07, 0.09), 0.05)
    if rng.random() < 0.9:
        c.add(ellipse(s, cy + ry * 0.3, cx + 0.05, 0.08, 0.08), v["aorta"], "aorta", parent=soft)
    c.add(ellipse(s, cy + ry * 0.62, cx, 0.12, 0.11), v["bone"], "spine", parent=soft)


def _paint_ct(c: Canvas) -> str:
    rng, s = c.rng, c.size
    if rng.random() < 0.5:
        # Soft-tissue window: fat < muscle < spleen < liver < kidney (contrast) < aorta < bone.
        _abdomen(
            c,
            {
                "fat": 0.27,
                "soft": 0.45,
                "liver": 0.6,
                "spleen": 0.52,
                "kidney": 0.7,
                "tumor": 0.36,
                "cyst": 0.3,
                "aorta": 0.82,
                "bone": 0.97,
            },
        )
        return "abdomen"
    soft, inner, cy, cx, ry = _trunk(c, 0.27, 0.45)
    lungs = []
    for name, side in (("right lung", -1), ("left lung", 1)):
        region = blob(
            s,
            rng,
            cy - 0.05 + _j(rng, 0.03),
            cx + side * 0.4,
            rng.uniform(0.4, 0.46),
            aspect=0.65,
            irregularity=0.06,
        )
        lungs.append(c.add(region, 0.04, name, parent=soft, within=inner))
    if rng.random() < 0.9:
        heart = ellipse(s, cy + 0.08, cx + 0.1, 0.26, 0.24, _j(rng, 0.3))
        c.add(heart, 0.56, "heart", parent=soft, within=inner)
    if rng.random() < 0.6:
        _lesion_in(c, lungs, "nodule", 0.52, rng.uniform(0.07, 0.12), 0.15)
    if rng.random() < 0.9:
        c.add(ellipse(s, cy + ry * 0.42, cx + 0.13, 0.075, 0.075), 0.8, "aorta", parent=soft)
    c.add(ellipse(s, cy + ry * 0.62, cx, 0.12, 0.11), 0.97, "spine", parent=soft)
    return "chest"


def _paint_mr(c: Canvas) -> str:
    rng, s = c.rng, c.size
    t2 = rng.random() < 0.5  # T2: fluid bright, T1: fluid dark
    if rng.random() < 0.5:
        _abdomen(
            c,
            {
                "fat": 0.78 if t2 else 0.88,
                "soft": 0.32,
                "liver": 0.22 if t2 else 0.55,
                "spleen": 0.58 if t2 else 0.4,
                "kidney": 0.64 if t2 else 0.45,
                "tumor": 0.85 if t2 else 0.25,
                "cyst": 0.97 if t2 else 0.12,
                "aorta": 0.04,
                "bone": 0.2,
            },
        )  # flowing blood and cortical bone give no signal
        return "abdomen"
    cy, cx = _j(rng, 0.05), _j(rng, 0.05)
    ry, rx = rng.uniform(0.8, 0.88), rng.uniform(0.64, 0.72)
    scalp = c.add(ellipse(s, cy, cx, ry, rx), 0.55 if t2 else 0.78)
    skull = c.add(ellipse(s, cy, cx, ry - 0.06, rx - 0.06), 0.06, parent=scalp)
    csf = c.add(ellipse(s, cy, cx, ry - 0.1, rx - 0.1), 0.9 if t2 else 0.15, parent=skull)
    brain = c.add(
        ellipse(s, cy, cx, ry - 0.13, rx - 0.13), 0.45 if t2 else 0.6, "brain", parent=csf
    )
    tilt = rng.uniform(0.2, 0.4)
    vent = ellipse(s, cy - 0.05, cx - 0.1, 0.24, 0.065, tilt)
    vent |= ellipse(s, cy - 0.05, cx + 0.1, 0.24, 0.065, -tilt)
    c.add(vent, 0.92 if t2 else 0.16, "ventricles", parent=brain, within=c.own(brain))
    if rng.random() < 0.65:
        r = rng.uniform(0.1, 0.16)
        at = _place_inside(c, brain, r * 1.6)
        if at is not None:
            if rng.random() < 0.7:  # edema is a ring around the tumour, not part of it
                c.add(
                    blob(s, rng, *at, r * 1.7, irregularity=0.25),
                    0.76 if t2 else 0.42,
                    "edema",
                    parent=brain,
                    within=c.own(brain),
                )
            c.add(
                blob(s, rng, *at, r, irregularity=0.2),
                0.62 if t2 else 0.9,
                "tumor",
                parent=brain,
                within=c.mask(brain),
            )
    return "brain"


def _paint_pet(c: Canvas) -> str:
    """Coronal whole-body uptake: brain, heart, kidneys and bladder are avid; tumours are hot."""
    rng, s = c.rng, c.size
    cx = _j(rng, 0.05)
    head_y = -0.72 + _j(rng, 0.04)
    body = c.add(ellipse(s, head_y, cx, 0.18, 0.15), 0.1)
    trunk = ellipse(s, -0.5, cx, 0.12, 0.08) | ellipse(s, 0.1, cx, 0.62, 0.42)
    c.add(trunk, 0.08, parent=body)
    c.add(ellipse(s, head_y, cx, 0.14, 0.12), 0.85, "brain", parent=body)
    if rng.random() < 0.85:
        c.add(ellipse(s, -0.15, cx + 0.12, 0.13, 0.12, _j(rng, 0.3)), 0.6, "heart", parent=body)
    if rng.random() < 0.9:
        liver = blob(s, rng, 0.02, cx - 0.18, 0.21, aspect=1.2, irregularity=0.08)
        c.add(liver, 0.3, "liver", parent=body)
    for name, side in (("right kidney", -1), ("left kidney", 1)):
        if rng.random() < 0.8:
            c.add(ellipse(s, 0.2, cx + side * 0.2, 0.11, 0.075), 0.52, name, parent=body)
    if rng.random() < 0.9:
        c.add(ellipse(s, 0.58, cx, 0.1, 0.13), 0.95, "bladder", parent=body)
    if rng.random() < 0.7:
        torso = ellipse(s, 0.05, cx, 0.5, 0.34)
        spots = np.zeros((s, s), dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            at = random_point_in(torso, rng)
            if at is not None:
                spots |= blob(s, rng, *at, rng.uniform(0.06, 0.1), irregularity=0.2)
        c.add(spots, 0.92, "tumor", parent=body, within=trunk)
    return "whole body"


def _paint_xray(c: Canvas) -> str:
    """Postero-anterior chest radiograph: the patient's right lung is on the image left."""
    rng, s = c.rng, c.size
    yy, xx = grid(s)
    cx = _j(rng, 0.05)
    c.extra["cx"] = cx
    body = c.add(ellipse(s, 0.25, cx, 1.1, 0.92), 0.5)
    c.add(np.abs(xx - cx) < 0.11, 0.72, parent=body, within=c.own(body))  # mediastinum, spine
    lungs = []
    for name, side, r in (("right lung", -1, 0.55), ("left lung", 1, 0.5)):
        region = blob(
            s, rng, -0.05 + _j(rng, 0.03), cx + side * 0.4, r, aspect=0.58, irregularity=0.05
        )
        lungs.append(c.add(region, 0.16, name, parent=body))
    if rng.random() < 0.9:
        c.add(ellipse(s, 0.3, cx + 0.1, 0.24, 0.3, -0.3), 0.62, "heart", parent=body)
    if rng.random() < 0.5:
        _lesion_in(c, lungs, "nodule", 0.45, rng.uniform(0.07, 0.1), 0.1)
    if rng.random() < 0.3:
        host = lungs[int(rng.integers(2))]
        ys, xs = np.nonzero(c.own(host))
        if ys.size:
            bottom = (ys.max() + 0.5) / s * 2 - 1
            mid_x = (xs.mean() + 0.5) / s * 2 - 1
            level = bottom - rng.uniform(0.22, 0.35) + 0.25 * np.abs(xx - mid_x)  # meniscus
            c.add(yy > level, 0.56, "pleural effusion", parent=host, within=c.own(host))
    return "chest radiograph"


def _render_xray(c: Canvas) -> np.ndarray:
    s, cx = c.size, c.extra["cx"]
    yy, xx = grid(s)
    img = c.lookup()
    ribs = np.zeros_like(img)
    for k in range(8):  # posterior ribs: arcs that droop towards the sides
        ribs += (np.abs(yy - (-0.8 + 0.17 * k + 0.55 * np.abs(xx - cx) ** 1.5)) < 0.03) * 0.12
    ribs *= np.abs(xx - cx) > 0.1  # they end at the spine
    left = np.array([[-0.7, cx - 0.7], [-0.78, cx - 0.1]], np.float32)
    right = np.array([[-0.7, cx + 0.7], [-0.78, cx + 0.1]], np.float32)
    clavicles = polyline(s, left, 0.07) | polyline(s, right, 0.07)
    img = img + ribs * (c.labels > 0) + clavicles * 0.25
    return _grey_out(c, box_blur(img, 1), 0.02)


def _paint_ultrasound(c: Canvas) -> str:
    """Sector scan: a fan from a probe at the top, with anechoic cysts and hypoechoic tumours."""
    rng, s = c.rng, c.size
    yy, xx = grid(s)
    ay, ax = -1.05, _j(rng, 0.05)  # probe position
    radius, theta = np.hypot(yy - ay, xx - ax), np.arctan2(xx - ax, yy - ay)
    half = rng.uniform(0.5, 0.65)
    fan = (np.abs(theta) < half) & (radius > 0.12) & (radius < 2.05)
    tissue = c.add(fan, 0.5)
    c.add(fan & (radius < 0.32), 0.75, parent=tissue)  # skin and fat
    c.add(fan & (radius >= 0.32) & (radius < 0.5), 0.35, parent=tissue)  # muscle
    wanted = [n for n, p in (("cyst", 0.6), ("tumor", 0.7), ("vessel", 0.5)) if rng.random() < p]
    if len(wanted) < 2:
        wanted = ["tumor", "cyst"]
    post = np.ones((s, s), np.float32)  # acoustic enhancement (>1) or shadow (<1) behind findings
    taken = np.zeros((s, s), dtype=bool)
    for name in wanted:
        for _ in range(10):  # findings do not overlap
            rr, th = rng.uniform(0.75, 1.6), rng.uniform(-half * 0.7, half * 0.7)
            py, px = ay + rr * np.cos(th), ax + rr * np.sin(th)
            if name == "cyst":
                region = ellipse(s, py, px, rng.uniform(0.1, 0.15), rng.uniform(0.12, 0.18))
            elif name == "tumor":
                region = blob(s, rng, py, px, rng.uniform(0.13, 0.2), irregularity=0.35)
            else:
                region = ellipse(
                    s, py, px, rng.uniform(0.05, 0.065), rng.uniform(0.3, 0.4), _j(rng, 0.25)
                )
            region &= fan
            if not (region & taken).any():
                break
        taken |= region
        c.add(region, {"cyst": 0.03, "tumor": 0.2, "vessel": 0.05}[name], name, parent=tissue)
        behind = (np.abs(theta - th) < 0.11) & (radius > rr + 0.12) & fan
        post[behind] *= {"cyst": 1.35, "tumor": 0.55, "vessel": 1.0}[name]
    c.extra.update(post=post, radius=radius, fan=fan)
    return "soft tissue"


def _render_ultrasound(c: Canvas) -> np.ndarray:
    echo = c.lookup() * c.extra["post"] * np.exp(-0.35 * c.extra["radius"])
    speckle = box_blur(c.rng.rayleigh(0.8, echo.shape).astype(np.float32), 1) * 1.1
    img = np.clip(echo * speckle * 1.6, 0, 1) ** 0.85 * c.extra["fan"]
    return np.repeat(img[..., None], 3, axis=2)


def _paint_endoscopy(c: Canvas) -> str:
    rng, s = c.rng, c.size
    yy, xx = grid(s)
    view = c.add(ellipse(s, 0, 0, 0.97, 0.97), (0.85, 0.45, 0.42))  # pink mucosa
    ly, lx, rl = _j(rng, 0.35), _j(rng, 0.35), rng.uniform(0.15, 0.24)
    c.extra["lumen_yx"] = (ly, lx)
    wanted = [n for n, p in (("lumen", 0.9), ("polyp", 0.85), ("ulcer", 0.4)) if rng.random() < p]
    if len(wanted) < 2:
        wanted = ["lumen", "polyp"]
    if "lumen" in wanted:
        c.add(blob(s, rng, ly, lx, rl, irregularity=0.2), (0.1, 0.03, 0.03), "lumen", parent=view)
    for name in ("polyp", "ulcer"):
        if name not in wanted:
            continue
        r = rng.uniform(0.13, 0.22) if name == "polyp" else rng.uniform(0.09, 0.13)
        free = (np.hypot(yy - ly, xx - lx) > rl + r + 0.05) & (c.labels == view)
        at = random_point_in(free & ellipse(s, 0, 0, 0.9 - r, 0.9 - r), rng)
        if at is not None:
            colour = (0.95, 0.36, 0.32) if name == "polyp" else (0.95, 0.9, 0.72)
            c.add(
                blob(s, rng, *at, r, irregularity=0.15),
                colour,
                name,
                parent=view,
                within=c.labels == view,
            )
    return "colon"


def _render_endoscopy(c: Canvas) -> np.ndarray:
    rng, s = c.rng, c.size
    yy, xx = grid(s)
    ly, lx = c.extra["lumen_yx"]
    dist = np.hypot(yy - ly, xx - lx)
    # Light falls off towards the lumen; circular folds ripple the brightness. With no lumen in
    # view the camera faces the wall: flatter light.
    falloff = 0.9 if c.named("lumen") is not None else 0.25
    shade = np.clip(1.15 - falloff * (1 - np.clip(dist, 0, 1)), 0.35, 1.15)
    shade = shade * (1 + 0.07 * np.sin(dist * 20 + _j(rng, 3)))
    img = c.lookup() * (shade * (1 + 0.05 * smooth_noise(rng, s, 8)))[..., None]
    polyp = c.named("polyp")
    if polyp is not None:  # a raised dome: lit on top, a dark rim where it meets the wall
        ys, xs = np.nonzero(polyp)
        py, px = (ys.mean() + 0.5) / s * 2 - 1, (xs.mean() + 0.5) / s * 2 - 1
        dome = np.clip(1.25 - 2.5 * np.hypot(yy - py + 0.05, xx - px + 0.05), 0.8, 1.25)
        img = np.where(polyp[..., None], img * dome[..., None], img)
        img[dilate(polyp, 1) & ~polyp] *= 0.55
    inside = c.labels > 0
    for _ in range(int(rng.integers(4, 12))):  # specular highlights
        at = random_point_in(inside, rng)
        if at is not None:
            img[ellipse(s, *at, 0.015, 0.025, _j(rng, 1.5)) & inside] = 1.0
    return img * inside[..., None]


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None]
    return ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32)  # (n, 2)


def _paint_fundus(c: Canvas) -> str:
    rng, s = c.rng, c.size
    cy, cx = _j(rng, 0.04), _j(rng, 0.04)
    c.extra["centre"] = (cy, cx)
    retina = c.add(ellipse(s, cy, cx, 0.93, 0.93), (0.82, 0.36, 0.13))
    side = 1 if rng.random() < 0.5 else -1  # right or left eye: disc on the nasal side
    dy, dx = cy + _j(rng, 0.08), cx + side * 0.4
    my, mx = cy + _j(rng, 0.05), dx - side * 0.72
    width = rng.uniform(0.048, 0.064)
    vessels = np.zeros((s, s), dtype=bool)
    for sign in (-1, 1):  # upper and lower arcades, each a near and a far branch
        for reach in (0.55, 0.95):
            start = np.array([dy, dx], np.float32)
            mid = np.array([dy + sign * 0.55, dx - side * 0.15], np.float32)
            end = np.array([dy + sign * reach * 0.8 + _j(rng, 0.1), dx - side * reach], np.float32)
            vessels |= polyline(s, _bezier(start, mid, end), width)
    own = c.own(retina)
    c.add(vessels, (0.55, 0.1, 0.05), "vessels", parent=retina, within=own)
    c.add(ellipse(s, my, mx, 0.15, 0.15), (0.6, 0.22, 0.08), "macula", parent=retina, within=own)
    r = rng.uniform(0.13, 0.16)
    c.add(ellipse(s, dy, dx, r * 1.1, r), (0.98, 0.86, 0.58), "optic disc", parent=retina)
    if rng.random() < 0.5:
        spots = np.zeros((s, s), dtype=bool)
        for _ in range(int(rng.integers(2, 6))):
            at = random_point_in(ellipse(s, cy, cx, 0.75, 0.75), rng)
            if at is not None:
                spots |= blob(s, rng, *at, rng.uniform(0.045, 0.075), irregularity=0.3)
        c.add(spots, (0.42, 0.05, 0.03), "hemorrhage", parent=retina, within=c.own(retina))
    if rng.random() < 0.45:
        spots = np.zeros((s, s), dtype=bool)
        for _ in range(int(rng.integers(5, 11))):
            ry, rx = rng.uniform(0.025, 0.04, 2)
            spots |= ellipse(s, my + _j(rng, 0.35), mx + _j(rng, 0.35), ry, rx)
        c.add(spots, (0.95, 0.88, 0.42), "exudates", parent=retina, within=c.own(retina))
    return "retina"


def _render_fundus(c: Canvas) -> np.ndarray:
    yy, xx = grid(c.size)
    cy, cx = c.extra["centre"]
    vignette = np.clip(1.05 - 0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2), 0, 1)
    texture = 1 + 0.06 * smooth_noise(c.rng, c.size, 10)
    return c.lookup() * (vignette * texture)[..., None]


def _paint_dermoscopy(c: Canvas) -> str:
    rng, s = c.rng, c.size
    skin = c.add(np.ones((s, s), dtype=bool), (0.88, 0.68, 0.58))
    ly, lx, r = _j(rng, 0.15), _j(rng, 0.15), rng.uniform(0.32, 0.5)
    shape = blob(
        s,
        rng,
        ly,
        lx,
        r,
        irregularity=rng.uniform(0.2, 0.35),
        aspect=rng.uniform(0.75, 1.3),
        angle=_j(rng, 1.5),
    )
    lesion = c.add(shape, (0.5, 0.3, 0.2), "lesion", parent=skin)
    c.extra.update(lesion=lesion, centre=(ly, lx, r))
    wanted = [n for n in ("blue-white veil", "dark globules") if rng.random() < 0.55]
    if not wanted:  # keep a second target, so a question has to say which one it means
        wanted = ["blue-white veil" if rng.random() < 0.5 else "dark globules"]
    inside = c.own(lesion)
    for name in wanted:
        if name == "blue-white veil":
            at = _place_inside(c, lesion, 0.16)
            if at is not None:
                c.add(
                    blob(s, rng, *at, rng.uniform(0.13, 0.2)),
                    (0.5, 0.55, 0.7),
                    name,
                    parent=lesion,
                    within=inside,
                )
            continue
        dots = np.zeros((s, s), dtype=bool)
        for _ in range(int(rng.integers(6, 13))):
            at = random_point_in(inside, rng)
            if at is not None:
                ry, rx = rng.uniform(0.03, 0.045, 2)
                dots |= ellipse(s, *at, ry, rx)
        c.add(dots, (0.2, 0.1, 0.08), name, parent=lesion, within=inside)
    return "skin"


def _render_dermoscopy(c: Canvas) -> np.ndarray:
    rng, s = c.rng, c.size
    yy, xx = grid(s)
    ly, lx, r = c.extra["centre"]
    img = c.lookup()
    darker_centre = 0.7 + 0.3 * np.clip(np.hypot(yy - ly, xx - lx) / r, 0, 1)
    img = np.where(c.mask(c.extra["lesion"])[..., None], img * darker_centre[..., None], img)
    img = img * (1 + 0.06 * smooth_noise(rng, s, 14))[..., None]
    if rng.random() < 0.4:  # hairs lie over everything but change no mask
        for _ in range(int(rng.integers(2, 7))):
            p0 = rng.uniform(-1, 1, 2).astype(np.float32)
            pts = _bezier(p0, p0 + rng.uniform(-0.6, 0.6, 2), p0 + rng.uniform(-1.2, 1.2, 2))
            img[polyline(s, pts, 0.024)] = (0.15, 0.1, 0.08)
    if rng.random() < 0.5:
        img = img * np.clip(1.6 - 0.55 * (yy**2 + xx**2), 0, 1)[..., None]  # dermatoscope ring
    return img


def _grey_out(c: Canvas, img: np.ndarray, noise: float) -> np.ndarray:
    img = img + noise * 0.6 * smooth_noise(c.rng, c.size, 12)
    img = img + noise * c.rng.standard_normal(img.shape).astype(np.float32)
    return np.repeat(img[..., None], 3, axis=2)


def _render_ct(c: Canvas) -> np.ndarray:
    return _grey_out(c, c.lookup(), 0.025)


def _render_mr(c: Canvas) -> np.ndarray:
    # MR: smooth intensity bias across the field, Rician-like noise floor.
    bias = 1 + 0.12 * smooth_noise(c.rng, c.size, 3)
    return _grey_out(c, c.lookup() * bias, 0.03)


def _render_pet(c: Canvas) -> np.ndarray:
    uptake = box_blur(c.lookup(), 2)  # PET resolution is coarse
    uptake = uptake * (1 + 0.25 * c.rng.standard_normal(uptake.shape).astype(np.float32))
    v = np.clip(box_blur(uptake, 1), 0, 1)
    if c.rng.random() < 0.4:  # "hot iron" colour map, as PET is often displayed
        return np.stack(
            [np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1
        )
    return np.repeat(v[..., None], 3, axis=2)


_Painter = Callable[[Canvas], str]
_Renderer = Callable[[Canvas], np.ndarray]
LOOKS: dict[str, tuple[_Painter, _Renderer]] = {
    "ct": (_paint_ct, _render_ct),
    "mr": (_paint_mr, _render_mr),
    "pet": (_paint_pet, _render_pet),
    "xray": (_paint_xray, _render_xray),
    "ultrasound": (_paint_ultrasound, _render_ultrasound),
    "endoscopy": (_paint_endoscopy, _render_endoscopy),
    "fundus": (_paint_fundus, _render_fundus),
    "dermoscopy": (_paint_dermoscopy, _render_dermoscopy),
}
