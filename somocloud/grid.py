"""The run's regular lat/lon grid: cell centres, cell lookup and spatial tiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from somocloud.config import GridConfig
from somocloud.stores import StoreError

_DECIMALS = 6  # coordinates are rounded so that 0.1-degree grids compare exactly


@dataclass(frozen=True)
class Tile:
    """A rectangle of cells: rows [i0, i1) of `lat`, columns [j0, j1) of `lon`."""

    i0: int
    i1: int
    j0: int
    j1: int

    @property
    def id(self) -> str:
        return f"tile-{self.i0:05d}-{self.j0:05d}"


@dataclass(frozen=True)
class Grid:
    """A regular grid given by its outer edges and cell size; lat ascending, lon ascending."""

    resolution: float
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    @classmethod
    def from_config(cls, cfg: GridConfig) -> Grid:
        return cls(cfg.resolution, cfg.lat_min, cfg.lat_max, cfg.lon_min, cfg.lon_max)

    @property
    def nlat(self) -> int:
        return round((self.lat_max - self.lat_min) / self.resolution)

    @property
    def nlon(self) -> int:
        return round((self.lon_max - self.lon_min) / self.resolution)

    @property
    def shape(self) -> tuple[int, int]:
        return self.nlat, self.nlon

    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes, ascending."""
        return np.round(self.lat_min + self.resolution * (np.arange(self.nlat) + 0.5), _DECIMALS)

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes, ascending."""
        return np.round(self.lon_min + self.resolution * (np.arange(self.nlon) + 0.5), _DECIMALS)

    def locate(self, lat: np.ndarray | float, lon: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the cell holding each point; -1 where the point is outside the grid.

        A point on an edge between two cells belongs to the cell north/east of it."""
        lat_a = np.atleast_1d(np.asarray(lat, dtype="float64"))
        lon_a = np.atleast_1d(np.asarray(lon, dtype="float64"))
        lon_a = np.where(lon_a >= self.lon_max, lon_a - 360.0, lon_a)  # accept 0-360 longitudes
        with np.errstate(invalid="ignore"):
            i = np.floor(np.nan_to_num((lat_a - self.lat_min) / self.resolution + 1e-9, nan=-1)).astype(int)
            j = np.floor(np.nan_to_num((lon_a - self.lon_min) / self.resolution + 1e-9, nan=-1)).astype(int)
        finite = np.isfinite(lat_a) & np.isfinite(lon_a)  # NaN → int is platform-dependent
        i = np.where(finite, i, -1)
        j = np.where(finite, j, -1)
        inside = finite & (i >= 0) & (i < self.nlat) & (j >= 0) & (j < self.nlon)
        return np.where(inside, i, -1), np.where(inside, j, -1)

    def tiles(self, size: int) -> list[Tile]:
        """Row-major tiles of `size` x `size` cells (edge tiles may be smaller)."""
        return [
            Tile(i0, min(i0 + size, self.nlat), j0, min(j0 + size, self.nlon))
            for i0 in range(0, self.nlat, size)
            for j0 in range(0, self.nlon, size)
        ]

    def check(self, ds: xr.Dataset, url: str, producer: str | None = None) -> None:
        """`StoreError` unless `ds` has exactly this grid's `lat`/`lon` coordinates (6 decimals)."""
        for coord, wanted in (("lat", self.lat), ("lon", self.lon)):
            have = (
                np.round(np.asarray(ds[coord].values, dtype="float64"), _DECIMALS)
                if coord in ds.coords
                else None
            )
            if have is None or have.shape != wanted.shape or not np.array_equal(have, wanted):
                hint = f"; rerun `{producer}` with this config" if producer else ""
                raise StoreError(
                    f"{url}: coordinate {coord!r} does not match the run grid "
                    f"({wanted.size} cells from {wanted[0]}){hint}"
                )

    def coords(self) -> dict[str, tuple[str, np.ndarray, dict[str, str]]]:
        """xarray coordinates `lat`, `lon` with CF attributes."""
        return {
            "lat": ("lat", self.lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "lon": ("lon", self.lon, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
        }
