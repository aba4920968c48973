"""Image side of the synthetic ADNI generator: a real head template, warped per subject, atrophied per visit,
posed/biased/noised per scan, written as NIfTI or as a DICOM series.

Coordinate chain of one scan (all maps are *backward*, from the written voxel to the template voxel):

    scan voxel --G--> scanner mm --pose^-1--> subject mm --identity warp^-1--> atrophied template mm
               --atrophy field--> template mm --template affine^-1--> template voxel

`G` is the grid (voxel -> scanner mm, isocentre at the FOV centre); the header affine written to disk is G with a
random origin shift (`header_shift`), as real scanners put the origin anywhere. Only numpy/scipy/nibabel/pydicom.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
HEAD_T1 = RESOURCES / "mni152nlin6asym_head_t1w_1mm_u7.nii.gz"
BRAIN_MASK = RESOURCES / "mni152nlin6asym_brainmask_1mm.nii.gz"

FOV_MM = np.array([208.0, 240.0, 240.0])  # scanner field of view along R, A, S before storage reorientation
COMPOSITE_MM = 2.5  # spacing of the per-visit composite warp grid
# label codes of Template.labels
LABELS = {"csf": 1, "gm": 2, "wm": 3, "ventricle": 4, "hippocampus": 5}
# mm of boundary shift per unit of each planted load (synth_clinical: age load, disease load), for each unit field
# of Template.fields (order of FIELD_NAMES). Aging: ventricles enlarge, sulci widen (cortical thinning), the brain
# shrinks; AD: the CSF in and around the medial temporal lobe widens into it, ventricles enlarge. Sized so that on
# the demo cohort a linear fit of age on the planted volumes reaches r ~0.9 (tests/test_synth.py) and, after the
# demo's preprocessing at 3 mm, ventricle and medial-temporal CSF voxel counts still give age and AD
# (bench/synth_signal).
FIELD_NAMES = ("ventricle", "hippocampus", "brain", "sulcal_csf", "mtl_csf")
AGE_MM = np.array([12.0, 0.5, 1.5, 2.5, 0.0])
AD_MM = np.array([2.5, 1.0, 0.3, 0.3, 5.0])
FLOW_STEPS = 4  # Euler steps of the (stationary) displacement field: large shifts without folding


# ----------------------------------------------------------------------------------------------- template
@dataclass(frozen=True)
class Template:
    t1: np.ndarray  # float32, contrast-mapped: CSF ~0.25, GM ~0.62, WM ~1.0
    mask: np.ndarray  # float32 0/1 brain mask
    labels: np.ndarray  # uint8, LABELS codes inside the mask, 0 outside
    affine: np.ndarray  # voxel -> MNI mm (1 mm grid)
    fields: np.ndarray  # (len(FIELD_NAMES), 3, X, Y, Z) float32 unit displacement fields (max |u| = 1 mm), 2 mm grid
    field_affine: np.ndarray  # voxel -> mm of the 2 mm grid
    head_centre: np.ndarray  # mm, centre of the head bounding box


def _kmeans_1d(values: np.ndarray, k: int = 3, iters: int = 50) -> np.ndarray:
    """k-means of integer intensities, run on their histogram (the template is stored as uint8)."""
    hist = np.bincount(values.astype(np.int64))
    levels = np.arange(hist.size, dtype=np.float64)
    centres = np.percentile(values, np.linspace(10, 90, k)).astype(np.float64)
    for _ in range(iters):
        lab = np.argmin(np.abs(levels[:, None] - centres[None]), axis=1)
        centres = np.array([np.average(levels[lab == c], weights=hist[lab == c] + 1e-12) for c in range(k)])
    return centres


def _block_mean(a: np.ndarray, f: int = 2) -> np.ndarray:
    s = [n - n % f for n in a.shape]
    a = a[: s[0], : s[1], : s[2]].astype(np.float32)
    return a.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(1, 3, 5))


def _unit_gradient_field(frac2: np.ndarray, sigma_mm: float, sign: float) -> np.ndarray:
    """sign * grad(smoothed fraction) scaled so that its largest vector is 1 mm (voxels are 2 mm)."""
    s = ndi.gaussian_filter(frac2, sigma_mm / 2.0)
    g = np.stack(np.gradient(s, 2.0)).astype(np.float32)
    return sign * g / max(float(np.sqrt((g**2).sum(0)).max()), 1e-6)


MTL_REACH_MM = 10.0  # smoothing (sigma) of the hippocampal region that weights the mtl_csf field


def _mtl_csf_field(frac: dict[str, np.ndarray]) -> np.ndarray:
    """Towards the CSF (sulcal or ventricular) in and around the medial temporal lobe (the hippocampal region
    smoothed by MTL_REACH_MM), fading to zero away from it; max 1 mm."""
    near = ndi.gaussian_filter(frac["hippocampus"], MTL_REACH_MM / 2.0)
    weight = np.clip(2.0 * near / max(float(near.max()), 1e-6), 0.0, 1.0)
    csf = _unit_gradient_field(frac["sulcal_csf"] + frac["ventricle"], 2.0, +1.0) * weight
    return csf / max(float(np.sqrt((csf**2).sum(0)).max()), 1e-6)


def _segment(
    t1u: np.ndarray, mask: np.ndarray, mask0: np.ndarray, affine: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """3-class intensity segmentation of the brain, lateral ventricles, and a medial-temporal (hippocampal) region."""
    t_lo, t_hi = (centres[0] + centres[1]) / 2, (centres[1] + centres[2]) / 2
    labels = np.zeros(t1u.shape, np.uint8)
    labels[mask & (t1u < t_lo)] = LABELS["csf"]
    labels[mask & (t1u >= t_lo) & (t1u < t_hi)] = LABELS["gm"]
    labels[mask & (t1u >= t_hi)] = LABELS["wm"]
    # lateral ventricles: dark connected blobs in a central box, left and right of the midline
    inv = np.linalg.inv(affine)
    lo = np.floor(inv[:3, :3] @ [-32, -48, -4] + inv[:3, 3]).astype(int)
    hi = np.ceil(inv[:3, :3] @ [32, 30, 34] + inv[:3, 3]).astype(int)
    box = np.zeros_like(mask)
    box[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    dark = mask0 & box & (t1u < centres[0] - 0.1 * (centres[1] - centres[0]))
    cc, n = ndi.label(dark)
    sizes = ndi.sum(np.ones_like(cc), cc, range(1, n + 1))
    vent = np.zeros_like(mask)
    for lab in np.flatnonzero(sizes > 1000) + 1:
        com_x = affine[0, 0] * ndi.center_of_mass(cc == lab)[0] + affine[0, 3]
        if abs(com_x) > 6:
            vent |= cc == lab
    vent = ndi.binary_dilation(vent, iterations=1) & mask & (t1u < t_lo)
    labels[vent] = LABELS["ventricle"]
    # medial temporal lobe / hippocampus: two ellipsoids around the MNI hippocampal bodies, brain tissue only
    hip = np.zeros_like(mask)
    for cx in (-26.0, 28.0):
        centre, radii = np.array([cx, -22.0, -14.0]), np.array([8.0, 17.0, 8.0])
        lo = np.floor(inv[:3, :3] @ (centre - radii) + inv[:3, 3]).astype(int)
        hi = np.ceil(inv[:3, :3] @ (centre + radii) + inv[:3, 3]).astype(int) + 1
        ijk = np.indices(tuple(hi - lo), dtype=np.float32) + lo[:, None, None, None]
        xyz = [affine[a, a] * ijk[a] + affine[a, 3] for a in range(3)]
        r2 = sum(((xyz[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
        hip[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= r2 <= 1
    labels[hip & mask & (labels != LABELS["ventricle"]) & (labels != 0)] = LABELS["hippocampus"]
    return labels, centres


@lru_cache(maxsize=1)
def load_template() -> Template:
    img = nib.load(HEAD_T1)
    t1u = np.asarray(img.dataobj, dtype=np.float32)
    # the template mask has holes at the ventricles/cisterns; a skull-stripping mask includes them
    mask0 = np.asarray(nib.load(BRAIN_MASK).dataobj) > 0
    c = _kmeans_1d(t1u[mask0])  # CSF / GM / WM intensity centres
    mask = ndi.binary_fill_holes(mask0)
    affine = img.affine.copy()
    labels, c = _segment(t1u, mask, mask0, affine, c)
    # contrast map towards a real T1w (dark CSF); the average template has washed-out CSF
    t1 = np.interp(t1u, [0, c[0], c[1], c[2], 127], [0, 0.25, 0.62, 1.0, 1.35]).astype(np.float32)
    frac = {
        "ventricle": _block_mean(labels == LABELS["ventricle"]),
        "hippocampus": _block_mean(labels == LABELS["hippocampus"]),
        "brain": _block_mean(mask),
        "sulcal_csf": _block_mean(labels == LABELS["csf"]),
    }
    fields = np.stack(
        [
            _unit_gradient_field(frac["ventricle"], 5.0, +1.0),  # sample towards the ventricle: it grows
            _unit_gradient_field(frac["hippocampus"], 3.0, -1.0),  # sample away from it: it shrinks
            _unit_gradient_field(frac["brain"], 4.0, -1.0),  # brain surface recedes from the skull
            _unit_gradient_field(frac["sulcal_csf"], 2.0, +1.0),  # sulci widen
            _mtl_csf_field(frac),  # the CSF around the hippocampus (temporal horn, fissures) widens into it
        ]
    )
    field_affine = affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    field_affine[:3, 3] += 0.5  # centre of a 2x2x2 block of 1 mm voxels
    head = np.argwhere(t1u > 8)
    centre_vox = (head.min(0) + head.max(0)) / 2
    return Template(
        t1=t1,
        mask=mask.astype(np.float32),
        labels=labels,
        affine=affine,
        fields=fields,
        field_affine=field_affine,
        head_centre=affine[:3, :3] @ centre_vox + affine[:3, 3],
    )


@lru_cache(maxsize=4)
def smoothed_t1(voxel_mm: float) -> np.ndarray:
    """Template blurred to the partial-volume scale of the requested voxel size (anti-aliasing)."""
    t = load_template()
    sigma = np.sqrt(max(voxel_mm**2 - 1.0, 0.0)) / 2.355
    return ndi.gaussian_filter(t.t1, sigma) if sigma > 0.05 else t.t1


# ----------------------------------------------------------------------------------------------- warps
@dataclass
class IdentityWarp:
    """Subject anatomy: template mm = A_inv @ subject mm + w(subject mm); A is a per-axis head scaling."""

    scale: np.ndarray  # (3,) per-axis head size factors
    disp: np.ndarray  # (3, X, Y, Z) displacement (mm) on a coarse grid in subject space
    grid_affine: np.ndarray  # voxel -> subject mm of that grid
    cache: np.ndarray | None = field(default=None, repr=False)  # template mm of the composite grid points


def random_identity(rng: np.random.Generator, head_scale: np.ndarray, amp_mm: float = 2.5) -> IdentityWarp:
    spacing = 8.0
    lo = np.array([-112.0, -150.0, -100.0])
    shape = (29, 35, 30)
    noise = rng.standard_normal((3, *shape))
    disp = np.stack([ndi.gaussian_filter(c, 1.5, mode="nearest") for c in noise])
    disp *= amp_mm / max(float(np.sqrt((disp**2).sum(0).mean())), 1e-6)
    grid_affine = np.diag([spacing] * 3 + [1.0])
    grid_affine[:3, 3] = lo
    return IdentityWarp(np.asarray(head_scale, float), disp.astype(np.float32), grid_affine)


def _grid_points(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """(3, N) mm coordinates of an axis-aligned grid (diagonal affine)."""
    axes = [affine[a, a] * np.arange(n, dtype=np.float64) + affine[a, 3] for a, n in enumerate(shape)]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])


def _sample(fieldv: np.ndarray, inv_affine: np.ndarray, pts: np.ndarray, mode: str = "nearest") -> np.ndarray:
    """Trilinear sample of a (3, X, Y, Z) field at (3, N) mm points -> (3, N)."""
    vox = inv_affine[:3, :3] @ pts + inv_affine[:3, 3:4]
    return np.stack([ndi.map_coordinates(c, vox, order=1, mode=mode) for c in fieldv])


@dataclass
class CompositeWarp:
    """Per-visit map subject mm -> template voxel, tabulated on a subject-space grid (COMPOSITE_MM spacing)."""

    tvox: np.ndarray  # (3, X, Y, Z) float32 template voxel coordinates
    grid_affine: np.ndarray  # grid voxel -> subject mm

    def template_voxels(self, grid_coords: np.ndarray) -> np.ndarray:
        """(3, N) grid-index coordinates -> (3, N) template voxel coordinates (trilinear)."""
        return np.stack([ndi.map_coordinates(c, grid_coords, order=1, mode="nearest") for c in self.tvox])


def _composite_grid(ident: IdentityWarp) -> tuple[tuple[int, int, int], np.ndarray]:
    t = load_template()
    lo = t.head_centre * ident.scale - np.array([112.0, 132.0, 124.0])
    shape = tuple(int(v) for v in np.ceil(np.array([224.0, 264.0, 248.0]) / COMPOSITE_MM))
    grid_affine = np.diag([COMPOSITE_MM] * 3 + [1.0])
    grid_affine[:3, 3] = lo
    return shape, grid_affine


def _identity_coords(ident: IdentityWarp) -> np.ndarray:
    """Template mm of every composite-grid point of this subject (cached: shared by all its visits)."""
    if ident.cache is None:
        shape, grid_affine = _composite_grid(ident)
        pts = _grid_points(shape, grid_affine)
        ident.cache = pts / ident.scale[:, None] + _sample(ident.disp, np.linalg.inv(ident.grid_affine), pts)
    return ident.cache


def _inside(pts: np.ndarray, box: np.ndarray) -> np.ndarray:
    return np.all((pts >= box[0][:, None]) & (pts <= box[1][:, None]), axis=0)


def atrophy_mm(age_load: float, disease_load: float) -> np.ndarray:
    """mm of boundary shift of each unit field (FIELD_NAMES) for these planted loads."""
    return AGE_MM * max(age_load, 0.0) + AD_MM * max(disease_load, 0.0)


def composite_warp(ident: IdentityWarp, age_load: float, disease_load: float = 0.0) -> CompositeWarp:
    """Compose the subject's identity warp with this visit's atrophy: the unit fields weighted by `atrophy_mm`,
    followed as a flow (FLOW_STEPS Euler steps), so that shifts of several mm stay fold-free."""
    t = load_template()
    shape, grid_affine = _composite_grid(ident)
    q = _identity_coords(ident)
    shift_mm = atrophy_mm(age_load, disease_load)
    if shift_mm.any():
        q = q.copy()
        inv_field = np.linalg.inv(t.field_affine)
        sel = np.flatnonzero(_inside(q, _field_box()))  # the atrophy fields vanish outside the brain
        vox = inv_field[:3, :3] @ q[:, sel] + inv_field[:3, 3:4]
        sel = sel[ndi.map_coordinates(_moving_mask(), vox, order=0, mode="constant", cval=0) > 0]
        velocity = np.tensordot((shift_mm / FLOW_STEPS).astype(np.float32), t.fields, axes=1)  # float32: fast
        points = q[:, sel]
        for _ in range(FLOW_STEPS):  # a point where every field is zero never moves: only the others are followed
            points += _sample(velocity, inv_field, points)
        q[:, sel] = points
    inv_t = np.linalg.inv(t.affine)
    tvox = (inv_t[:3, :3] @ q + inv_t[:3, 3:4]).astype(np.float32).reshape(3, *shape)
    return CompositeWarp(tvox, grid_affine)


@lru_cache(maxsize=1)
def _field_box() -> np.ndarray:
    """mm bounding box (2, 3) of where any unit atrophy field is non-negligible, with a margin."""
    t = load_template()
    nz = np.argwhere(np.abs(t.fields).max(axis=(0, 1)) > 5e-3)
    lo, hi = (t.field_affine[:3, :3] @ nz.min(0) + t.field_affine[:3, 3]), (
        t.field_affine[:3, :3] @ nz.max(0) + t.field_affine[:3, 3])  # fmt: skip
    return np.stack([lo - 4.0, hi + 4.0])


@lru_cache(maxsize=1)
def _moving_mask() -> np.ndarray:
    """uint8 on the field grid: 1 where some unit field is non-negligible (dilated by a voxel), else 0."""
    t = load_template()
    magnitude = np.sqrt((t.fields**2).sum(axis=1)).max(axis=0)
    return ndi.binary_dilation(magnitude > 1e-4, iterations=1).astype(np.uint8)


@lru_cache(maxsize=1)
def _mask_box_vox() -> np.ndarray:
    t = load_template()
    nz = np.argwhere(t.mask > 0)
    return np.stack([nz.min(0) - 2.0, nz.max(0) + 2.0])


def visit_volumes(warp: CompositeWarp) -> dict[str, float]:
    """Volumes (ml) of the subject's anatomy at this visit, measured in subject space on the composite grid."""
    t = load_template()
    vox = warp.tvox.reshape(3, -1)
    vox = vox[:, _inside(vox, _mask_box_vox())]
    lab = ndi.map_coordinates(t.labels, vox, order=0, mode="constant", cval=0)
    brain = ndi.map_coordinates(t.mask, vox, order=1, mode="constant", cval=0)
    ml = COMPOSITE_MM**3 / 1000.0
    return {
        "brain_mask_ml": float(brain.sum() * ml),
        "brain_tissue_ml": float(np.isin(lab, [LABELS["gm"], LABELS["wm"], LABELS["hippocampus"]]).sum() * ml),
        "ventricle_ml": float((lab == LABELS["ventricle"]).sum() * ml),
        "hippocampus_ml": float((lab == LABELS["hippocampus"]).sum() * ml),
        "sulcal_csf_ml": float((lab == LABELS["csf"]).sum() * ml),
        "gm_ml": float((lab == LABELS["gm"]).sum() * ml),
    }


def template_brain_ml() -> float:
    t = load_template()
    return float(t.mask.sum() * abs(np.linalg.det(t.affine[:3, :3])) / 1000.0)


# ----------------------------------------------------------------------------------------------- scans
def rotation_matrix(deg: np.ndarray) -> np.ndarray:
    rx, ry, rz = np.deg2rad(deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


@dataclass
class ScanParams:
    """Everything random about one acquisition (drawn by `draw_scan_params`)."""

    rotation_deg: np.ndarray
    translation_mm: np.ndarray
    scale: np.ndarray
    header_shift_mm: np.ndarray
    bias_coef: np.ndarray  # 10 coefficients of a quadratic log-bias polynomial
    noise_sigma: float  # relative to WM = 1
    gain: float
    gamma: float
    orientation: str  # storage axis codes, e.g. "PSR"
    extra: dict = field(default_factory=dict)


def draw_scan_params(
    rng: np.random.Generator, bias_amp: float, noise: tuple[float, float], orientation: str
) -> ScanParams:
    return ScanParams(
        rotation_deg=rng.uniform(-10, 10, 3),
        translation_mm=rng.uniform(-10, 10, 3),
        scale=rng.uniform(0.985, 1.015, 3),
        header_shift_mm=np.round(rng.uniform(-30, 30, 3), 2),
        bias_coef=rng.normal(0, bias_amp, 10) * np.array([0] + [1] * 3 + [0.5] * 6),
        noise_sigma=float(rng.uniform(*noise)),
        gain=float(rng.uniform(800, 2500)),
        gamma=float(rng.uniform(0.9, 1.1)),
        orientation=orientation,
    )


def pose_matrix(params: ScanParams, head_centre_subject: np.ndarray) -> np.ndarray:
    """scanner mm <- subject mm (rigid + small scaling), head centred at the isocentre before the random shift."""
    m = np.eye(4)
    lin = rotation_matrix(params.rotation_deg) @ np.diag(params.scale)
    m[:3, :3] = lin
    m[:3, 3] = params.translation_mm - lin @ head_centre_subject
    return m


def scan_grid(voxel_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    shape = tuple(int(round(f / voxel_mm)) for f in FOV_MM)
    g = np.diag([voxel_mm] * 3 + [1.0])
    g[:3, 3] = -voxel_mm * (np.array(shape) - 1) / 2.0
    return shape, g


def _log_bias_axes(params: ScanParams, shape, grid) -> tuple[np.ndarray, ...]:
    return tuple(
        ((grid[a, a] * np.arange(n) + grid[a, 3]) / (FOV_MM[a] / 2)).reshape([-1 if b == a else 1 for b in range(3)])
        for a, n in enumerate(shape)
    )


@dataclass
class RenderedScan:
    data: np.ndarray  # int16 in storage orientation
    mask: np.ndarray  # uint8 brain mask, same grid
    affine: np.ndarray  # header affine (storage orientation)
    vox2template: np.ndarray  # 4x4 storage voxel -> template (MNI) mm, linear part of the chain (no warps)
    pose: np.ndarray  # scanner mm <- subject mm


def render_scan(
    warp: CompositeWarp,
    head_scale: np.ndarray,
    params: ScanParams,
    voxel_mm: float,
    rng: np.random.Generator,
) -> RenderedScan:
    """Resample the subject at this visit into a posed scanner grid; add bias field, Rician noise, gain."""
    t = load_template()
    src = smoothed_t1(voxel_mm)
    shape, grid = scan_grid(voxel_mm)
    pose = pose_matrix(params, t.head_centre * head_scale)
    chain = np.linalg.inv(pose) @ grid  # scan voxel -> subject mm
    to_grid = (np.linalg.inv(warp.grid_affine) @ chain).astype(np.float32)  # scan voxel -> composite grid index
    x, y, z = _log_bias_axes(params, shape, grid)
    c = params.bias_coef
    data = np.empty(shape, np.float32)
    mask = np.empty(shape, np.uint8)
    step = max(1, int(1_500_000 // (shape[0] * shape[1])))
    i = np.arange(shape[0], dtype=np.float32)[:, None, None]
    j = np.arange(shape[1], dtype=np.float32)[None, :, None]
    for k0 in range(0, shape[2], step):
        k = np.arange(k0, min(k0 + step, shape[2]), dtype=np.float32)[None, None, :]
        sub = (shape[0], shape[1], k.size)
        gc = np.stack([np.broadcast_to(m[0] * i + m[1] * j + m[2] * k + m[3], sub).ravel() for m in to_grid[:3]])
        tv = warp.template_voxels(gc)
        val = ndi.map_coordinates(src, tv, order=1, mode="constant", cval=0.0).reshape(sub)
        msk = ndi.map_coordinates(t.mask, tv, order=0, mode="constant", cval=0.0).reshape(sub)
        zz = z[:, :, k0 : k0 + k.size]
        logb = c[0] + c[1] * x + c[2] * y + c[3] * zz + c[4] * x * x + c[5] * y * y + c[6] * zz * zz
        logb = logb + c[7] * x * y + c[8] * x * zz + c[9] * y * zz
        val = np.clip(val, 0, None) ** params.gamma * np.exp(logb, dtype=np.float32)
        n = rng.standard_normal((2, *sub), dtype=np.float32) * params.noise_sigma
        data[:, :, k0 : k0 + k.size] = np.sqrt((val + n[0]) ** 2 + n[1] ** 2)  # Rician magnitude noise
        mask[:, :, k0 : k0 + k.size] = msk >= 0.5
    data = np.clip(np.round(data * params.gain), 0, 32767).astype(np.int16)
    header = grid.copy()
    header[:3, 3] += params.header_shift_mm
    img = nib.Nifti1Image(data, header).as_reoriented(_ornt(params.orientation))
    msk_img = nib.Nifti1Image(mask, header).as_reoriented(_ornt(params.orientation))
    # storage voxel -> RAS scan voxel -> scanner mm -> subject mm -> template mm (linear part)
    storage_to_ras_vox = np.linalg.inv(header) @ img.affine
    vox2template = np.diag(list(1 / head_scale) + [1.0]) @ chain @ storage_to_ras_vox
    return RenderedScan(np.asanyarray(img.dataobj), np.asanyarray(msk_img.dataobj), img.affine, vox2template, pose)


def _ornt(codes: str) -> np.ndarray:
    from nibabel.orientations import axcodes2ornt, ornt_transform

    return ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(codes)))


# ----------------------------------------------------------------------------------------------- writers
def nifti_image(data: np.ndarray, affine: np.ndarray, dtype=None) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if dtype is not None:
        img.header.set_data_dtype(dtype)
    return img


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nifti_image(data, affine), str(path))


def write_dicom_series(folder: Path, data: np.ndarray, affine: np.ndarray, meta: dict, name: str) -> list[Path]:
    """Write one MR DICOM file per slice (slices along the third storage axis) that dcm2niix can convert.

    `name` is a format string with `{slice}` (1-based), e.g. the LONI style
    "ADNI_002_S_0295_MR_MPRAGE__br_raw_20060418193713091_{slice}_S13408_I13722.dcm".
    `meta` keys: PatientID, StudyDate (YYYYMMDD), StudyTime, SeriesDescription, SeriesNumber, Manufacturer,
    MagneticFieldStrength, uid_seed (str, makes the UIDs deterministic).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    col_dir, row_dir = lps[:3, 0], lps[:3, 1]  # along array axis 0 = along a row (columns change)
    di, dj, dk = (float(np.linalg.norm(lps[:3, a])) for a in range(3))
    iop = [float(v) for v in np.concatenate([col_dir / di, row_dir / dj])]
    seed = meta["uid_seed"]
    study_uid = generate_uid(entropy_srcs=[seed, "study"])
    series_uid = generate_uid(entropy_srcs=[seed, "series"])
    for_uid = generate_uid(entropy_srcs=[seed, "frame"])
    paths = []
    for k in range(data.shape[2]):
        sop_uid = generate_uid(entropy_srcs=[seed, "sop", str(k)])
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = MRImageStorage
        fm.MediaStorageSOPInstanceUID = sop_uid
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.Modality, ds.PatientPosition = "MR", "HFS"
        ds.PatientID = ds.PatientName = meta["PatientID"]
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = meta["StudyDate"]
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = meta.get("StudyTime", "120000")
        ds.SeriesDescription = ds.ProtocolName = meta["SeriesDescription"]
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = int(meta["SeriesNumber"]), k + 1, 1
        ds.Manufacturer = meta.get("Manufacturer", "SIEMENS")
        ds.MagneticFieldStrength = float(meta["MagneticFieldStrength"])
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "GR\\IR", "SP\\MP", "3D"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [dj, di]
        ds.SliceThickness = ds.SpacingBetweenSlices = dk
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T.astype("<i2")).tobytes()
        path = folder / name.format(slice=k + 1)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def clinica_space(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """What clinica's T1 centring (`center_nifti_origin`) does to an image: closest-canonical reorientation and a
    diagonal affine centred on the volume. Apply it to a truth mask to compare it with the BIDS image voxelwise.
    (clinica re-saves float data into the int16 header, so its intensities differ from the raw ones by < 0.1.)"""
    can = nib.as_closest_canonical(img)
    hdr = can.header
    q = np.eye(4)
    for i in range(1, 4):
        q[i - 1, i - 1] = hdr["pixdim"][i]
        q[i - 1, 3] = -1.0 * hdr["pixdim"][i] * hdr["dim"][i] / 2.0
    return nib.Nifti1Image(np.asanyarray(can.dataobj), q, header=hdr)


def write_pose_json(path: Path, scan: RenderedScan, params: ScanParams, voxel_mm: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "rotation_deg": [round(float(v), 4) for v in params.rotation_deg],
        "translation_mm": [round(float(v), 4) for v in params.translation_mm],
        "scale": [round(float(v), 5) for v in params.scale],
        "pose_det": round(float(np.prod(params.scale)), 6),
        "header_shift_mm": [float(v) for v in params.header_shift_mm],
        "orientation": params.orientation,
        "voxel_mm": voxel_mm,
        "bias_log_coef": [round(float(v), 5) for v in params.bias_coef],
        "noise_sigma_rel_wm": round(params.noise_sigma, 5),
        "gain": round(params.gain, 3),
        "gamma": round(params.gamma, 4),
        "affine": np.round(scan.affine, 6).tolist(),
        "pose_scanner_from_subject": np.round(scan.pose, 6).tolist(),
        "vox2template_mm": np.round(scan.vox2template, 6).tolist(),
        "note": "vox2template_mm maps a voxel of the raw image (and of its truth mask) to MNI152NLin6Asym mm, "
        "ignoring the subject's smooth identity warp (a few mm) and the atrophy field.",
        **params.extra,
    }
    path.write_text(json.dumps(info, indent=1) + "\n")
