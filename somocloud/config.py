"""The run config: one YAML file describes a product run.

Every section is a pydantic model that rejects unknown keys, so a typo fails before any work starts.
Stores are URLs; credentials and S3 endpoints never live here (they come from the environment or
from run-time storage options, see `somocloud.stores`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from somocloud.layers import N_LAYERS

SCHEMA_VERSION = 1


class ConfigError(ValueError):
    """A run config that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, field docstrings are the docs."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class GridConfig(Section):
    """The run's regular latitude/longitude grid (cell centres)."""

    resolution: float = Field(0.25, gt=0)
    """Cell size in degrees (0.25 for SoMo.ml v1, 0.1 for SoMo.ml-EU)."""
    lat_min: float = Field(-60.0, ge=-90, le=90)
    """Southern edge of the grid in degrees north (a cell edge, not a centre)."""
    lat_max: float = Field(90.0, ge=-90, le=90)
    """Northern edge of the grid in degrees north."""
    lon_min: float = Field(-180.0, ge=-180, le=360)
    """Western edge of the grid in degrees east, in [-180, 180)."""
    lon_max: float = Field(180.0, ge=-180, le=360)
    """Eastern edge of the grid in degrees east."""

    @model_validator(mode="after")
    def _edges_ordered(self) -> GridConfig:
        if self.lat_max <= self.lat_min:
            raise ValueError("grid.lat_max must be greater than grid.lat_min")
        if self.lon_max <= self.lon_min:
            raise ValueError("grid.lon_max must be greater than grid.lon_min")
        return self


class PeriodConfig(Section):
    """The days the product covers. Forcing is also needed before `start` (see `RunConfig.lookback_start`)."""

    start: dt.date = dt.date(2000, 1, 1)
    """First day of the product."""
    end: dt.date = dt.date(2019, 12, 31)
    """Last day of the product (inclusive)."""
    train_start: dt.date | None = None
    """First day of training targets; defaults to `start`."""
    train_end: dt.date | None = None
    """Last day of training targets; defaults to `end`."""

    @model_validator(mode="after")
    def _ordered(self) -> PeriodConfig:
        if self.end < self.start:
            raise ValueError("period.end must not be before period.start")
        return self


class StoresConfig(Section):
    """Where every input and output lives, as URLs (plain path, file://, s3://, memory://).

    Unset stores default to a path under `root` (see `RunConfig.store`)."""

    root: str = "./somocloud-demo"
    """Base URL; every store left unset lives under it."""
    forcing_source: str | None = None
    """Input: the store of `forcing.source` (e.g. hourly ERA5 in the analysis-ready Zarr layout: long names,
    latitude descending, longitude 0-360); stores of other sources are set in `forcing.variables`."""
    static_inputs: str | None = None
    """Input: static rasters Zarr (texture, porosity, vegetation code, land-sea mask) on the ERA5 layout."""
    dem: str | None = None
    """Input: digital elevation model Zarr (`elevation`, m) on a grid finer than the run grid."""
    ismn: str | None = None
    """Input: in-situ station data: a folder (or zip) of ISMN files in any layout, zip archives, or USCRN tables."""
    truth: str | None = None
    """Optional input: true soil moisture (synthetic world only), used by `evaluate`."""
    coarse_targets: str | None = None
    """Input of `train.multiscale`: coarse gridded soil moisture Zarr (time, lat, lon) on a regular grid
    coarser than the run grid (a satellite product, or `synthetic.coarse_factor`'s)."""
    forcing: str | None = None
    """Output of `forcing`: daily forcing cube Zarr with the canonical names, pixel-chunked."""
    reference_sm: str | None = None
    """Output of `forcing`: daily reference soil moisture `swvl1..3` on the run grid."""
    statics: str | None = None
    """Output of `statics`: static features Zarr on the run grid."""
    insitu: str | None = None
    """Output of `ingest`: daily quality-controlled in-situ series Zarr (series x time)."""
    targets: str | None = None
    """Output of `targets`: training targets Zarr (cell x time x depth)."""
    model: str | None = None
    """Output of `train`: model artifact folder (weights, scalers, manifest)."""
    product: str | None = None
    """Output of `predict`: the product Zarr (time x depth x lat x lon)."""
    evaluation: str | None = None
    """Output of `evaluate`: metrics folder."""
    report: str | None = None
    """Output of `report`: folder of the validation report (`index.html`, `figures/`)."""
    netcdf: str | None = None
    """Output of `export-netcdf`: folder of CF-1.11 NetCDF files, one per layer and year."""
    stac: str | None = None
    """Output of `publish`: STAC folder holding `collection.json`."""
    catalog: str | None = None
    """Output of `publish`: the Intake catalog YAML file."""

    @field_validator("*")
    @classmethod
    def _no_credentials_in_urls(cls, value: str | None) -> str | None:
        return _no_credentials(value)


def _no_credentials(value: str | None) -> str | None:
    # user:secret@host URLs would put a credential into every output's attributes.
    if value is not None and re.match(r"^[a-z0-9]+://[^/]*@", value):
        raise ValueError("store URLs must not contain credentials; use the environment instead")
    return value


def _known_source(value: str) -> str:
    # imported here: the forcing package imports this module
    from somocloud.forcing.sources import SOURCES

    if value not in SOURCES:
        raise ValueError(f"unknown forcing source {value!r}; known: {sorted(SOURCES)}")
    return value


RegridMethod = Literal["auto", "index", "conservative", "bilinear"]


class SyntheticConfig(Section):
    """The synthetic world built by `somocloud synthetic` / `demo`: forcing, statics, truth, stations."""

    seed: int = 42
    """Seed of every random draw of the world."""
    land_fraction: float = Field(0.65, gt=0, le=1)
    """Approximate share of land cells in the world."""
    n_stations: int = Field(40, ge=1)
    """Number of in-situ stations (each in its own land cell)."""
    dem_factor: int = Field(4, ge=1)
    """The DEM is this many times finer than the run grid in each direction."""
    subdaily_step_hours: int = Field(3, ge=1, le=24)
    """Interval of the synthetic station observations in hours."""
    gap_fraction: float = Field(0.05, ge=0, lt=1)
    """Fraction of station days removed (gaps)."""
    bad_flag_fraction: float = Field(0.03, ge=0, lt=1)
    """Fraction of station records carrying a non-'G' quality flag (with corrupted values)."""
    spinup_days: int = Field(365, ge=30)
    """Days the water-balance model runs before `lookback_start` so the first day is not a cold start."""
    coarse_factor: int | None = Field(None, ge=2)
    """Also write a coarse "satellite" (`stores.coarse_targets`): the true layer-1 soil moisture averaged
    over blocks of this many run-grid cells per side (land cells only), with noise and gaps. None: none."""
    coarse_noise: float = Field(0.02, ge=0)
    """Std of the Gaussian noise added to the coarse values, m3 m-3."""
    coarse_gap_fraction: float = Field(0.3, ge=0, lt=1)
    """Share of coarse (cell, day) values removed (orbit gaps, frozen soil, dense vegetation)."""


class IngestConfig(Section):
    """Quality control and daily aggregation of in-situ series (SoMo.ml Methods)."""

    quality_flags: list[str] = Field(default_factory=lambda: ["G"])
    """ISMN quality flags that are kept; everything else is dropped."""
    min_obs_per_day: int = Field(6, ge=1)
    """A daily mean is formed only on days with at least this many valid sub-daily values."""
    min_days: int = Field(60, ge=1)
    """Series with fewer daily values than this (about two months) are dropped."""
    parallel_min_files: int = Field(200, ge=1)
    """With more station files than this, files are read on the Dask cluster; fewer are read in-process."""
    files_per_task: int = Field(50, ge=1)
    """Station files read by one Dask task (when reading on the cluster)."""
    max_bad_line_fraction: float = Field(0.5, ge=0, le=1)
    """A file with a larger share of bad record lines is quarantined whole (its good lines are suspect)."""


class TargetsConfig(Section):
    """Training targets: in-situ daily series rescaled to the reference soil moisture (SoMo.ml Methods)."""

    min_overlap_days: int = Field(60, ge=2)
    """A series is used for a layer only if it and the reference both have a value on at least this
    many days of `period.start`..`period.end`: the mean and std it is rescaled with come from those
    days. 60 applies the paper's "two months of data" to the overlap (ingest's `min_days` applies it
    to the whole record, which may lie mostly outside the period)."""


class VariableSourceConfig(Section):
    """Where one canonical daily variable comes from when not from `forcing.source`."""

    source: str
    """Name of the source in `somocloud.forcing.sources.SOURCES` (e.g. `mswep_daily` for `tp`)."""
    store: str
    """URL of that source's store (plain path, file://, s3://, memory://; never with credentials)."""
    regrid: RegridMethod = "auto"
    """How the source is brought onto the run grid (see `forcing.regrid`)."""

    _known = field_validator("source")(classmethod(lambda cls, v: _known_source(v)))
    _no_credentials_in_url = field_validator("store")(classmethod(lambda cls, v: _no_credentials(v)))


class ForcingConfig(Section):
    """Building the daily forcing and reference soil moisture cubes from the sources."""

    source: str = "era5"
    """Name of the source in `somocloud.forcing.sources.SOURCES` (`era5`, `era5_land`, `cf_daily`,
    `mswep_daily`, ...) read from `stores.forcing_source`; it provides every canonical variable not set
    in `variables`. Checked against the registry when the config is loaded."""
    regrid: RegridMethod = "auto"
    """How `source` is brought onto the run grid: `auto` picks cells when the source holds the run grid's
    centres, an area-weighted mean when it is as fine or finer, bilinear when coarser
    (`somocloud.sampling`); or name the method."""
    variables: dict[str, VariableSourceConfig] = {}
    """Canonical variables (`t2m`, `tp`, `q`, `snr`, `ssrd`, `skt`, `swvl1..3`) taken from another source,
    e.g. `tp: {source: mswep_daily, store: s3://bucket/mswep.zarr}` or `swvl1..3` from ERA5 when the
    forcing is CF daily data."""
    days_per_task: int = Field(32, ge=1)
    """Days read and aggregated by one task (the map-chunked working unit)."""
    min_hours_per_day: int = Field(24, ge=1, le=24)
    """A day with fewer valid hours than this is NaN."""
    tile_size: int = Field(16, ge=1)
    """Lat/lon chunk size of the pixel-chunked cube (time is one chunk)."""
    keep_intermediate: bool = False
    """Keep the daily map-chunked intermediate (`<forcing>.daily-maps.zarr`) after both cubes are complete."""

    _known = field_validator("source")(classmethod(lambda cls, v: _known_source(v)))

    @model_validator(mode="after")
    def _every_variable_has_a_source(self) -> ForcingConfig:
        from somocloud.forcing.sources import SOURCES
        from somocloud.layers import FORCING_VARIABLES, REFERENCE_VARIABLES

        names = (*FORCING_VARIABLES, *REFERENCE_VARIABLES)
        unknown = sorted(set(self.variables) - set(names))
        if unknown:
            raise ValueError(f"variables: unknown canonical name(s) {unknown}; known: {list(names)}")
        for name in names:
            chosen = self.variables.get(name)
            source = chosen.source if chosen else self.source
            lexicon = getattr(SOURCES[source], "lexicon", {})
            if name not in lexicon:
                where = f"variables.{name}.source" if chosen else "source"
                raise ValueError(
                    f"{where}: source {source!r} does not provide {name!r} (it has {sorted(lexicon)}); "
                    f"take it from another source with `forcing.variables.{name}`"
                )
        return self


class ModelConfig(Section):
    """The EA-LSTM (SoMo.ml: hidden 128, dropout 0.5, 365-day lookback, forget bias 5)."""

    hidden_size: int = Field(128, ge=1)
    """Number of LSTM hidden units."""
    dropout: float = Field(0.5, ge=0, lt=1)
    """Dropout on the last hidden state before the dense head."""
    seq_length: int = Field(365, ge=2)
    """Lookback window in days (one zero-state window per predicted day)."""
    initial_forget_bias: float = 5.0
    """Initial value of the forget-gate bias."""
    cascade: bool = True
    """Layers 2 and 3 also take the simulated soil moisture of the layers above (SoMo.ml); the forcing then
    starts `3 x (seq_length - 1)` days before the product so that every window of every layer is exact."""
    predict_last_n: int = Field(1, ge=1)
    """Targets per training window: the loss covers the last n steps of each window (neuralhydrology's
    `predict_last_n`). 1 is SoMo.ml's one output per window (`exact` inference); n > 1 trains a model for
    `blocked` inference, a warm-up of `seq_length - n` days then blocks of n days. Below seq_length."""

    @model_validator(mode="after")
    def _last_n_inside_window(self) -> ModelConfig:
        if self.predict_last_n >= self.seq_length:
            raise ValueError(
                f"predict_last_n ({self.predict_last_n}) must be below seq_length ({self.seq_length}): "
                "the window needs at least one warm-up step"
            )
        return self

    @property
    def stages(self) -> int:
        """Windows chained back from a product day: one per layer with the cascade, else one."""
        return N_LAYERS if self.cascade else 1


class Region(Section):
    """A lat/lon box in degrees (cell centres inside it belong to it)."""

    lat_min: float = Field(ge=-90, le=90)
    """Southern edge."""
    lat_max: float = Field(ge=-90, le=90)
    """Northern edge."""
    lon_min: float = Field(ge=-180, le=360)
    """Western edge."""
    lon_max: float = Field(ge=-180, le=360)
    """Eastern edge."""

    @model_validator(mode="after")
    def _ordered(self) -> Region:
        if not (self.lat_min < self.lat_max and self.lon_min < self.lon_max):
            raise ValueError(f"needs lat_min < lat_max and lon_min < lon_max, got {self.model_dump()}")
        return self

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return (lat >= self.lat_min) & (lat <= self.lat_max) & (lon >= self.lon_min) & (lon <= self.lon_max)


class MultiscaleConfig(Section):
    """Multiscale training (Liu et al. 2022): besides the in-situ term at station cells, an areal term
    compares the mean of the fine-cell predictions inside each coarse cell with gridded coarse soil moisture
    (`stores.coarse_targets`, e.g. a 9 or 36 km satellite product), in every batch (`somocloud.multiscale`)."""

    alpha: float = Field(0.5, ge=0, le=1)
    """Weight of the in-situ term; the areal term gets `1 - alpha` (Liu et al.: 0.5)."""
    variable: str = "sm"
    """Coarse soil moisture variable (m3 m-3, dims time, lat, lon) in `stores.coarse_targets`."""
    layers: list[int] = Field(default_factory=lambda: [1])
    """Layers (1-based) the areal term trains: a satellite sees only the top few centimetres."""
    min_land_fraction: float = Field(0.5, gt=0, le=1)
    """A coarse cell is used when at least this share of the run-grid cells inside it are land."""
    coarse_per_batch: int = Field(32, ge=1)
    """Coarse (cell, day) samples per optimiser step, each averaging the predictions of its fine cells (so a
    step runs `coarse_per_batch` x the fine cells per coarse cell extra windows). On the synthetic world 32
    beat 8 on every layer-1 score in the station-free region (docs/multiscale.md)."""
    rescale_to_reference: bool = True
    """Rescale each coarse cell's series to the mean and std of the reference soil moisture averaged over
    its fine cells, as the in-situ targets are (`targets`), so both terms share one scale."""

    @field_validator("layers")
    @classmethod
    def _valid_layers(cls, value: list[int]) -> list[int]:
        if not value or any(k not in (1, 2, 3) for k in value) or len(set(value)) != len(value):
            raise ValueError(f"must be distinct layers among 1, 2, 3; got {value}")
        return sorted(value)


class TrainConfig(Section):
    """Training of one model per layer and member."""

    epochs: int = Field(15, ge=1)
    """Number of passes over the training windows."""
    batch_size: int = Field(256, ge=1)
    """Windows per optimiser step."""
    learning_rate: float = Field(1e-3, gt=0)
    """Adam learning rate."""
    max_windows_per_epoch: int | None = Field(None, ge=1)
    """Cap on windows drawn per epoch (random subset), None for all."""
    n_members: int = Field(5, ge=1)
    """Ensemble members per layer, each with its own seed."""
    holdout_fraction: float = Field(0.2, ge=0, lt=1)
    """Share of target cells held out of training and used by `evaluate` (unused with `holdout_region`)."""
    multiscale: MultiscaleConfig | None = None
    """Also learn from coarse gridded soil moisture (areal term); None trains on in-situ targets only."""
    holdout_region: Region | None = None
    """The transfer experiment: hold out every target cell whose centre lies in this lat/lon box (°), train
    on the others, so `evaluate` scores a region the model never saw. Replaces `holdout_fraction`."""
    nse_epsilon: float = Field(0.05, gt=0)
    """Epsilon added to each cell's target std in the NSE* loss, in m3 m-3. Measured on USCRN 2020
    (docs/uscrn-experiment.md, "Choosing ε"): per-station daily stds are 0.01-0.11 (median 0.04-0.065 by
    layer), and of ε = 0.005, 0.02, 0.05 and 0.1 the held-out skill was best at 0.05."""
    grad_clip: float = Field(1.0, gt=0)
    """Gradient-norm clip."""
    seed: int = 0
    """Base seed; member m of layer k (1-based) uses seed + 1000 * k + m."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads per training task (None: 1, one task per worker thread)."""
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of the training cells whose windows give the per-epoch validation loss (not fitted)."""
    cv_folds: int = Field(1, ge=1)
    """Spatial k-fold cross-validation for skill (SoMo.ml: 5): the training cells are grouped into this many
    folds; each fold's models are trained on the other folds (scalers included) and simulate the fold's
    cells, and the out-of-fold skill per layer goes to the artifact's `cv.json`. 1: no cross-validation.
    The artifact's models are trained on every training cell either way."""
    cv_block_size: int | None = Field(None, ge=1)
    """Cells per side of the square spatial blocks that share a fold (None: folds are drawn cell by cell)."""
    learning_rate_schedule: dict[int, float] = {}
    """Epoch (1-based) → learning rate from that epoch on, e.g. `{11: 5.0e-4, 21: 1.0e-4}` (Kratzert et al.
    2019); epochs before the first entry use `learning_rate`."""
    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop a member when its validation loss has not improved for this many epochs and keep the weights of
    its best epoch (None: train every epoch, keep the last weights). Needs `validation_fraction` > 0."""

    @field_validator("learning_rate_schedule")
    @classmethod
    def _positive_schedule(cls, value: dict[int, float]) -> dict[int, float]:
        for epoch, rate in value.items():
            if epoch < 1 or not rate > 0:
                raise ValueError(f"entry {epoch}: {rate}: epochs start at 1 and rates must be positive")
        return dict(sorted(value.items()))


class PredictConfig(Section):
    """Running the models over every land cell."""

    mode: Literal["exact", "blocked"] = "exact"
    """Inference mode (`somocloud.modes`): `exact` = one zero-state window per predicted day (the published
    method); `blocked` = a warm-up of `seq_length - predict_last_n` days then blocks of `predict_last_n`
    days, for models trained with `model.predict_last_n` > 1 (a product of its own, ~seq_length/n steps
    per output instead of seq_length). `train` records the mode in the model; `predict` refuses a model
    trained for the other mode."""
    tile_size: int = Field(16, ge=1)
    """Lat/lon size of one task's tile; also the product's lat/lon chunk size."""
    time_chunk: int = Field(365, ge=1)
    """Days per task's block of days, and per product chunk (or shard, with `chunk_days`/`chunk_cells`)."""
    chunk_days: int | None = Field(None, ge=1)
    """Days per inner chunk of a Zarr 3 shard. Set this or `chunk_cells` and each task writes one shard
    (`time_chunk` x 3 x `tile_size`²) of smaller chunks, so a one-day map reads `chunk_days` days of each
    tile, not a whole task's block, while objects stay one per task (docs/store-layout.md). None =
    `time_chunk`. Must divide `time_chunk`."""
    chunk_cells: int | None = Field(None, ge=1)
    """Lat/lon cells per inner chunk of a shard (see `chunk_days`). None = `tile_size`. Must divide
    `tile_size`."""
    batch_windows: int = Field(4096, ge=1)
    """Windows per forward pass (memory knob)."""
    gpu: bool = False
    """Submit tasks with `resources={"GPU": 1}` (workers must declare it); workers use CUDA when present."""
    parts_wait_s: float = Field(3600.0, ge=0)
    """With `--parts i/N`, part 1 writes the product template (or starts an `extend`) and parts 2..N wait
    up to this many seconds for it, polling, so an Indexed Job's pods can all start at once."""

    @model_validator(mode="after")
    def _inner_chunks_divide_the_shard(self) -> PredictConfig:
        for field, inner, outer, of in (
            ("chunk_days", self.chunk_days, self.time_chunk, "time_chunk"),
            ("chunk_cells", self.chunk_cells, self.tile_size, "tile_size"),
        ):
            if inner is not None and outer % inner:
                raise ValueError(f"predict.{field} ({inner}) must divide predict.{of} ({outer})")
        return self

    @property
    def sharded(self) -> bool:
        """Whether each task writes one shard of smaller chunks (else one chunk)."""
        return self.chunk_days is not None or self.chunk_cells is not None


class ReportConfig(Section):
    """The validation report (`somocloud report`)."""

    max_days: int = Field(366, ge=2)
    """Long-term maps and profiles read every k-th day, at most this many days (bounds the report's cost)."""
    example_cells: int = Field(3, ge=0)
    """Held-out cells whose series are plotted (those with the most scored days)."""
    stations_experiment: str | None = None
    """Results JSON of the real-station experiment (`python -m somocloud.experiments.uscrn --out ...`);
    when set, the report has its section (table and per-station box plots)."""


class EvaluateConfig(Section):
    """Skill at held-out stations."""

    datasets: dict[str, str] = Field(default_factory=dict)
    """Other gridded soil moisture products to score beside the product at the same cells and days, name →
    URL (Zarr, or NetCDF ending in `.nc`, with `soil_moisture` (time, depth, lat, lon) on the run grid).
    The forcing's `reference_sm` is always scored when it exists."""
    lookback: bool = True
    """Also run the lookback permutation experiment at the held-out cells (`somocloud.lookback`), written to
    `<evaluation>/lookback.json` and drawn by `report`."""
    min_overlap_days: int = Field(30, ge=2)
    """Fewer paired days than this give NaN metrics."""
    cells_per_batch: int = Field(256, ge=1)
    """Cells whose product series are read together (memory knob: cells x days x 3 layers floats)."""


class ProviderConfig(Section):
    """One organisation in the STAC collection's `providers` list."""

    name: str
    """Organisation name."""
    roles: list[Literal["licensor", "producer", "processor", "host"]] = Field(default_factory=list)
    """STAC provider roles."""
    url: str | None = None
    """Home page of the organisation."""
    description: str | None = None
    """What the organisation did for this product."""


class PublishConfig(Section):
    """STAC collection and Intake catalog of the product."""

    collection_id: str = "somocloud-demo"
    """STAC collection id (also the Intake catalog name)."""
    title: str = "somocloud soil moisture (demo)"
    """Human-readable title."""
    description: str = (
        "Daily multi-layer soil moisture from an Entity-Aware LSTM trained on in-situ stations."
    )
    """Collection description."""
    license: str = "CC-BY-4.0"
    """SPDX licence of the product."""
    netcdf_prefix: str | None = None
    """File-name prefix of `export-netcdf` (`<prefix>_layer<k>_<YYYY>.nc`); None = `collection_id`.
    `SoMo.ml_v1` gives the original product's names."""
    public_href: str | None = None
    """URL analysts use to open the product, if different from `stores.product`."""
    public_read: bool = False
    """The product is published for anonymous read: the STAC Zarr asset gets `xarray:storage_options:
    {"anon": true}` (the only storage option ever published), so `xr.open_dataset(asset, engine="stac")`
    needs no credentials. Granting the read itself is the bucket's business (policy or `object_acl`)."""
    object_acl: Literal["public-read", "private"] | None = None
    """Canned S3 ACL `publish` sets on every object it publishes or links (product, STAC, catalog, report,
    evaluation, model, NetCDF files), for stores with object ACLs (MinIO, Ceph, moto, ACL-enabled AWS
    buckets). None leaves ACLs alone; on AWS a bucket policy is the usual way to grant public read."""
    providers: list[ProviderConfig] = Field(
        default_factory=lambda: [ProviderConfig(name="somocloud", roles=["producer", "processor"])]
    )
    """Organisations that produced, processed, licensed or host the product (STAC `providers`)."""
    keywords: list[str] = Field(
        default_factory=lambda: ["soil moisture", "machine learning", "LSTM", "ISMN", "SoMo.ml", "ERA5"]
    )
    """STAC keywords."""


CREDENTIAL_WORDS = ("secret", "password", "token", "credential", "access_key", "private_key")
"""Words that mark an option key as a credential."""


class ClusterConfig(Section):
    """Which Dask cluster runs the distributed steps."""

    kind: Literal["local", "address", "kubernetes", "coiled"] = "local"
    """`local` LocalCluster of processes, `address` an existing scheduler, `kubernetes`/`coiled` see deploy/."""
    address: str | None = None
    """Scheduler address for kind=address (e.g. tcp://scheduler:8786)."""
    n_workers: int = Field(2, ge=1)
    """Workers of a local cluster."""
    threads_per_worker: int = Field(1, ge=1)
    """Threads per local worker."""
    memory_limit: str = "auto"
    """Memory limit per local worker (dask syntax)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the cluster class of `kubernetes` (`dask_kubernetes.operator.KubeCluster`, e.g.
    `image`, `resources`, `namespace`) or `coiled` (`coiled.Cluster`, e.g. `worker_gpu`, `region`,
    `software`, `worker_vm_types`). Never credentials: keys that name one are refused; clusters get their
    cloud credentials from the environment or the platform."""

    @field_validator("options")
    @classmethod
    def _no_credential_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if any(word in key.lower() for word in CREDENTIAL_WORDS):
                raise ValueError(
                    f"cluster.options.{key}: credentials never go in the config; give them by environment"
                )
        return value

    @model_validator(mode="after")
    def _address_given(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("cluster.address is required when cluster.kind is 'address'")
        return self


class ExtendConfig(Section):
    """`somocloud extend`: add days to a finished product as new forcing arrives (near-real time)."""

    until: dt.date | None = None
    """Last day the product should hold after `extend` (inclusive; `--until`). Forcing sources must
    cover it."""


class ImportSomomlConfig(Section):
    """Inputs of `somocloud import-somoml`: the published SoMo.ml v1 files, imported into `stores.model`
    (see `somocloud.model.somoml_v1`). URLs (plain path, file://, s3://, memory://; never credentials)."""

    checkpoint: str | None = None
    """The SoMo.ml v1 torch state dict (`model_epoch15.pt`: EA-LSTM of layer 1, 0-10 cm)."""
    dynamic_scaler: str | None = None
    """CSV scaler of the dynamic inputs and the target (`log_tp`, `t2m`, `snr`, `ssrd`, `skt`, `q`, `sm`
    columns; rows `aveK` mean and `stdK` standard deviation)."""
    static_scaler: str | None = None
    """CSV scaler of the static inputs (`ETOPOavg`, `ETOPOsd`, `tp`, `arid`, `clay`, `sand`, `silt`,
    `poro_top`, `poro_mid`, `domveg` columns; rows `aveK` and `stdK`)."""

    @field_validator("*")
    @classmethod
    def _no_credentials_in_urls(cls, value: str | None) -> str | None:
        return _no_credentials(value)


# Default file/folder names of stores left unset, under stores.root.
DEFAULT_STORE_NAMES: dict[str, str] = {
    "forcing_source": "inputs/era5_hourly.zarr",
    "static_inputs": "inputs/static_inputs.zarr",
    "dem": "inputs/dem.zarr",
    "ismn": "inputs/ismn",
    "truth": "inputs/truth.zarr",
    "coarse_targets": "inputs/coarse_sm.zarr",
    "forcing": "work/forcing.zarr",
    "reference_sm": "work/reference_sm.zarr",
    "statics": "work/statics.zarr",
    "insitu": "work/insitu.zarr",
    "targets": "work/targets.zarr",
    "model": "model",
    "product": "product/soil_moisture.zarr",
    "evaluation": "evaluation",
    "report": "report",
    "netcdf": "netcdf",
    "stac": "stac",
    "catalog": "catalog.yaml",
}


class RunConfig(Section):
    """One product run."""

    schema_version: Literal[1] = 1
    """Version of this config schema."""
    name: str = "somocloud-demo"
    """Name of the product run."""
    product_version: str = "0.1.0"
    """Version of the product this run makes."""
    seed: int = 0
    """Global seed (data splits)."""
    grid: GridConfig = Field(default_factory=GridConfig)
    """The run's grid."""
    period: PeriodConfig = Field(default_factory=PeriodConfig)
    """The product's days."""
    stores: StoresConfig = Field(default_factory=StoresConfig)
    """Store URLs."""
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    """Synthetic world (demo and tests)."""
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    """In-situ quality control."""
    targets: TargetsConfig = Field(default_factory=TargetsConfig)
    """Training targets (rescaling to the reference)."""
    forcing: ForcingConfig = Field(default_factory=ForcingConfig)
    """Forcing build."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """Model architecture."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Training."""
    predict: PredictConfig = Field(default_factory=PredictConfig)
    """Prediction."""
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    """Evaluation."""
    report: ReportConfig = Field(default_factory=ReportConfig)
    """The validation report."""
    publish: PublishConfig = Field(default_factory=PublishConfig)
    """Publishing."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Dask cluster."""
    import_somoml: ImportSomomlConfig = Field(default_factory=ImportSomomlConfig)
    """Inputs of `import-somoml` (the published SoMo.ml v1 checkpoint and scalers)."""
    extend: ExtendConfig = Field(default_factory=ExtendConfig)
    """`extend`: the day to extend a finished product to."""

    def store(self, name: str) -> str:
        """The URL of store `name`: the configured one, else its default under `stores.root`."""
        if name not in DEFAULT_STORE_NAMES:
            raise KeyError(f"unknown store {name!r}")
        value = getattr(self.stores, name)
        if value:
            return str(value)
        return self.stores.root.rstrip("/") + "/" + DEFAULT_STORE_NAMES[name]

    @model_validator(mode="after")
    def _blocked_needs_a_blocked_model(self) -> RunConfig:
        n = self.model.predict_last_n
        if self.predict.mode == "blocked":
            if n < 2:
                raise ValueError(
                    "predict.mode 'blocked' needs model.predict_last_n > 1 (the block length in days); "
                    f"got {n}"
                )
            if self.predict.time_chunk % n:
                raise ValueError(
                    f"predict.mode 'blocked': predict.time_chunk ({self.predict.time_chunk}) must be a multiple "
                    f"of the block, model.predict_last_n ({n}), so that every task cuts the same blocks"
                )
        return self

    @property
    def lookback_start(self) -> dt.date:
        """First day of forcing needed: `seq_length - 1` days before the product's first day for each
        chained window (`model.stages`: with the cascade, layer 3's first window needs layer 2's simulation
        of the 364 days before, which needs layer 1's of the 364 days before those). Training needs this in
        either mode; blocked prediction needs less (`modes.Blocked.lookback`)."""
        return self.period.start - dt.timedelta(days=self.model.stages * (self.model.seq_length - 1))

    def resolved(self) -> dict[str, Any]:
        """The config with every store URL filled in, as JSON-able data (stored in every output)."""
        data = self.model_dump(mode="json")
        data["stores"] = {name: self.store(name) for name in DEFAULT_STORE_NAMES} | {"root": self.stores.root}
        return data

    def resolved_json(self) -> str:
        return json.dumps(self.resolved(), sort_keys=True)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`key.sub=value` strings → (dotted key, YAML-parsed value)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return parsed


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid run config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (None: all defaults), apply `key=value` overrides and validate it."""
    source = str(path) if path else "(defaults)"
    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read run config {source}: {exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"run config {source} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"run config {source} must be a mapping at the top level")
        data = loaded or {}
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value)
    return config_from_dict(data, source)


def config_from_dict(data: dict[str, Any], source: str = "(dict)") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def config_from_json(text: str) -> RunConfig:
    """Rebuild a config stored in an output's attributes (store URLs are kept as resolved)."""
    return config_from_dict(json.loads(text), "(stored config)")
