"""Static fields of the synthetic world: land/sea mask, fine DEM, soil texture, porosity, vegetation.

All arrays are on the run grid in its own order (lat ascending, lon ascending); the writers turn
them into the ERA5 layout. The climate "wetness" index (0 dry west .. 1 wet east) lives here because
vegetation and precipitation both follow it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import zoom

from somocloud.config import SyntheticConfig
from somocloud.grid import Grid
from somocloud.synthetic.fields import rng_for, smooth_noise

# IGBP vegetation codes used by the world (1..17; 17 = water bodies over sea).
ENF, DBF, MIXED, OPEN_SHRUB, SAVANNA, GRASS, WETLAND, CROP, URBAN, MOSAIC, BARREN, WATER = (
    1, 4, 5, 7, 9, 10, 11, 12, 13, 14, 16, 17,
)  # fmt: skip

_FOREST = (1, 2, 3, 4, 5, 8)
_SHRUB = (6, 7, 15, 16)


@dataclass(frozen=True)
class Statics:
    """The static world on the run grid (lat ascending, lon ascending)."""

    land_sea_mask: np.ndarray
    """(lat, lon) land fraction 0-1; a cell is land where it is >= 0.5."""
    elevation_fine: np.ndarray
    """(lat * dem_factor, lon * dem_factor) elevation in m (negative over sea), lat ascending."""
    elevation: np.ndarray
    """(lat, lon) mean of the fine DEM under each cell, m."""
    sand: np.ndarray
    """(lat, lon) sand fraction."""
    clay: np.ndarray
    """(lat, lon) clay fraction."""
    silt: np.ndarray
    """(lat, lon) silt fraction (1 - sand - clay)."""
    porosity_top: np.ndarray
    """(lat, lon) porosity of the top soil (layer 1)."""
    porosity_mid: np.ndarray
    """(lat, lon) porosity of the sub soil (layers 2 and 3)."""
    veg_type: np.ndarray
    """(lat, lon) IGBP vegetation code 1..17 (float; 17 over sea)."""
    wetness: np.ndarray
    """(lat, lon) climate wetness index 0 (dry) .. 1 (wet), drives precipitation and vegetation."""
    dem_factor: int
    """The fine DEM has this many pixels per cell along each axis."""

    @property
    def land(self) -> np.ndarray:
        """(lat, lon) bool land mask (the contract's rule `land_sea_mask >= 0.5`)."""
        return np.asarray(self.land_sea_mask >= 0.5)


def _unit_x(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) coordinates scaled to 0..1 across the grid (x: west→east, y: south→north)."""
    x = (np.arange(grid.nlon) + 0.5) / grid.nlon
    y = (np.arange(grid.nlat) + 0.5) / grid.nlat
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return yy, xx


def _noise_sigma(grid: Grid) -> float:
    """Smoothing length of the large-scale fields: a few cells, smaller on tiny grids."""
    return float(np.clip(0.18 * min(grid.nlat, grid.nlon), 1.0, 4.0))


def land_sea_mask(grid: Grid, land_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A land fraction field whose share of cells >= 0.5 is about `land_fraction`, coasts fractional."""
    z = smooth_noise(rng, grid.shape, _noise_sigma(grid))
    q = float(np.quantile(z, 1.0 - land_fraction)) if land_fraction < 1 else float(z.min())
    # a transition band of about one noise std gives fractional coastal cells
    return np.asarray(np.clip(0.5 + (z - q) / 0.7, 0.0, 1.0))


def fine_elevation(
    grid: Grid, lsm: np.ndarray, factor: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The fine DEM (plains rising westward, hills, roughness; bathymetry over sea) and its cell means."""
    shape = (grid.nlat * factor, grid.nlon * factor)
    x = (np.arange(shape[1]) + 0.5) / shape[1]
    y = (np.arange(shape[0]) + 0.5) / shape[0]
    yy, xx = np.meshgrid(y, x, indexing="ij")
    tilt = rng.uniform(-150.0, 150.0)
    base = 350.0 + 900.0 * (1.0 - xx) + tilt * (yy - 0.5)
    hills = 140.0 * smooth_noise(rng, shape, _noise_sigma(grid) * factor * 0.6)
    rough = 25.0 * smooth_noise(rng, shape, 0.7)
    lsm_fine = np.clip(zoom(lsm, factor, order=1, mode="nearest", grid_mode=True), 0.0, 1.0)
    coast = np.clip((lsm_fine - 0.5) * 3.0 + 0.15, 0.0, 1.0)  # land rises from the coast inland
    land_elev = np.maximum(2.0, (base + hills) * coast + rough * coast)
    sea_elev = -(15.0 + 800.0 * (0.5 - lsm_fine))
    fine = np.where(lsm_fine >= 0.5, land_elev, sea_elev)
    cell = fine.reshape(grid.nlat, factor, grid.nlon, factor).mean(axis=(1, 3))
    return fine, cell


def texture(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sand, clay, silt fractions (softmax of smooth fields, sandier in the west), summing to 1."""
    _, xx = _unit_x(grid)
    n = smooth_noise(rng, (3, *grid.shape), _noise_sigma(grid))
    logits = np.stack(
        [
            1.0 + 0.7 * n[0] + 0.8 * (0.5 - xx),  # sand
            0.2 + 0.5 * n[1] + 0.3 * (xx - 0.5),  # clay
            0.9 + 0.4 * n[2],  # silt
        ]
    )
    w = np.exp(logits - logits.max(axis=0))
    frac = w / w.sum(axis=0)
    sand, clay = frac[0], frac[1]
    return sand, clay, 1.0 - sand - clay


def porosity(sand: np.ndarray, clay: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top and sub-soil porosity from texture (Saxton-like linear fit) with a little noise."""
    mid = 0.47 - 0.13 * sand + 0.10 * clay + 0.008 * rng.standard_normal(sand.shape)
    top = mid + 0.03  # organic matter and tillage loosen the top soil
    return np.clip(top, 0.35, 0.6), np.clip(mid, 0.32, 0.57)


def wetness_index(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Climate wetness 0..1: wetter east, with smooth regional anomalies."""
    _, xx = _unit_x(grid)
    return np.asarray(
        np.clip(0.15 + 0.7 * xx + 0.12 * smooth_noise(rng, grid.shape, _noise_sigma(grid)), 0, 1)
    )


def vegetation(
    wetness: np.ndarray, elevation: np.ndarray, land: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """IGBP codes from climate wetness and elevation, with a few random urban/wetland/mosaic cells."""
    veg = np.select(
        [wetness < 0.25, wetness < 0.45, wetness < 0.65, wetness < 0.8],
        [OPEN_SHRUB, GRASS, CROP, MOSAIC],
        default=DBF,
    ).astype("float64")
    u = rng.uniform(size=veg.shape)
    veg = np.where((u < 0.05) & (wetness > 0.4), URBAN, veg)
    veg = np.where((u > 0.97) & (wetness > 0.55), WETLAND, veg)
    veg = np.where((u > 0.93) & (u <= 0.97) & (wetness > 0.7), MIXED, veg)
    veg = np.where((u > 0.9) & (wetness < 0.15), BARREN, veg)
    veg = np.where(elevation > 1500.0, ENF, veg)
    return np.asarray(np.where(land, veg, float(WATER)))


def root_fractions(veg_type: np.ndarray) -> np.ndarray:
    """(3, lat, lon) share of transpiration drawn from each layer: forests deeper, shrubs shallower."""
    grass = np.array([0.5, 0.3, 0.2])
    forest = np.array([0.3, 0.35, 0.35])
    shrub = np.array([0.6, 0.25, 0.15])
    is_forest = np.isin(veg_type, _FOREST)[None]
    is_shrub = np.isin(veg_type, _SHRUB)[None]
    r = np.where(
        is_forest, forest[:, None, None], np.where(is_shrub, shrub[:, None, None], grass[:, None, None])
    )
    return np.asarray(r)


def albedo(veg_type: np.ndarray) -> np.ndarray:
    """(lat, lon) broadband surface albedo by vegetation type."""
    table = np.full(18, 0.19)
    table[list(_FOREST)] = 0.13
    table[list(_SHRUB)] = 0.25
    table[[GRASS, SAVANNA]] = 0.21
    table[BARREN] = 0.30
    table[URBAN] = 0.15
    table[WETLAND] = 0.12
    table[WATER] = 0.07
    return np.asarray(table[veg_type.astype(int)])


def make_statics(grid: Grid, scfg: SyntheticConfig) -> Statics:
    """Build the static world for `grid` from `scfg.seed`.

    Raises:
        ValueError: if the world has fewer land cells than `synthetic.n_stations`.
    """
    rng = rng_for(scfg.seed, "statics")
    lsm = land_sea_mask(grid, scfg.land_fraction, rng)
    n_land = int((lsm >= 0.5).sum())
    if n_land < scfg.n_stations:
        raise ValueError(
            f"synthetic world: {n_land} land cells on a {grid.nlat}x{grid.nlon} grid cannot hold "
            f"synthetic.n_stations={scfg.n_stations} stations in distinct cells; "
            "raise synthetic.land_fraction or the grid size"
        )
    fine, cell = fine_elevation(grid, lsm, scfg.dem_factor, rng)
    sand, clay, silt = texture(grid, rng)
    p_top, p_mid = porosity(sand, clay, rng)
    wet = wetness_index(grid, rng)
    veg = vegetation(wet, cell, lsm >= 0.5, rng)
    return Statics(lsm, fine, cell, sand, clay, silt, p_top, p_mid, veg, wet, scfg.dem_factor)
