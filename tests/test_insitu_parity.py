"""Parity with the `ismn` package (PyPI 1.5.4, test-only dependency) on every series in tests/data/ismn.

For every station file of every layout `ismn` reads (header+values and CEOP-separate, unpacked and in
zip archives), `ismn.filehandlers.DataFile` and our readers must give identical timestamps, values,
quality flags, provider flags, depths and coordinates, and `ismn.interface.ISMN_Interface` and our
static-variables parser the same site properties. Deliberate differences (see the reader docstrings):

* names: `ismn` takes the station from the file name and the network from the first folder under
  the data root (for the archives whose members sit under an extra top folder, such as
  `Data_seperate_files_20170810_20180809.zip`, that is the top folder's name); we take both from the
  file content. ISMN writes a space as `_`
  in content and drops it or writes `-` in names, so names are compared without `_`, `-` and spaces;
* -9999 (missing) is kept by `ismn` and NaN for us; `ismn` would keep a repeated timestamp, we keep
  the first (the fixtures have none: asserted);
* texture: `ismn` gives % weight, we give fractions (compared as ours × 100);
* the old combined CEOP layout: `ismn` 1.5.4 no longer reads it (tested in test_insitu_layouts).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from somocloud.insitu import SourceFile, inventory, read_source, reader_for
from somocloud.insitu.metadata import parse_static_variables
from somocloud.insitu.model import SensorSeries
from tests.test_insitu import ISMN_DATA

ismn_filehandlers = pytest.importorskip("ismn.filehandlers")
ismn_interface = pytest.importorskip("ismn.interface")

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # inside ismn, with pandas 3.1

ALL_SOURCES = inventory(str(ISMN_DATA)).data
"""Every station file under tests/data/ismn, zip members included."""


def ismn_root_and_path(src: SourceFile) -> tuple[str, str]:
    """The (root, path in root) `ismn` wants for a file: the zip and its member, or for a plain file
    the folder above NETWORK/STATION (or above the file when it has no station folder)."""
    if src.member is not None:
        return src.url, src.member
    path = Path(src.url)
    depth = 3 if path.parent.parent.name not in ("format_header_values", "format_ceop_sep") else 2
    root = path.parents[depth - 1]
    return str(root), str(path.relative_to(root))


def ours(src: SourceFile) -> SensorSeries:
    data = read_source(src)
    reader = reader_for(src.name, data[:4096])
    assert reader is not None, src.name
    content = reader.read(src.name, data)
    assert content.rejected == [], content.rejected[:3]
    [series] = content.series
    return series


def plain(name: str) -> str:
    return re.sub(r"[_\- ]", "", name)


def test_fixture_inventory_covers_every_layout_and_archive() -> None:
    assert len(ALL_SOURCES) == 20
    assert sum(s.member is not None for s in ALL_SOURCES) == 16
    kinds = {reader_for(s.name, read_source(s)[:4096]).name for s in ALL_SOURCES}  # type: ignore[union-attr]
    assert kinds == {"ismn-header-values", "ismn-ceop-separate"}


@pytest.mark.parametrize("src", ALL_SOURCES, ids=[s.name[-70:] for s in ALL_SOURCES])
def test_same_series_as_ismn_datafile(src: SourceFile) -> None:
    root, path = ismn_root_and_path(src)
    fh = ismn_filehandlers.DataFile(root, path)
    ref = fh.read_data()
    meta = fh.metadata
    s = ours(src)

    # Timestamps: identical, in the same order (the fixtures are sorted and have no repeats).
    assert ref.index.is_unique and ref.index.is_monotonic_increasing
    np.testing.assert_array_equal(s.time, ref.index.to_numpy("datetime64[ns]"))
    # Values: bit-identical; ismn's -9999 is our NaN.
    expected = ref["soil_moisture"].to_numpy("float64").copy()
    expected[expected == -9999.0] = np.nan
    np.testing.assert_array_equal(s.values, expected)
    assert s.flags.tolist() == ref["soil_moisture_flag"].astype(str).tolist()
    provider = [
        "" if isinstance(v, float) and math.isnan(v) else str(v) for v in ref["soil_moisture_orig_flag"]
    ]
    assert s.provider_flags.tolist() == provider
    # Depths and coordinates.
    depth = meta["instrument"].depth
    assert (s.meta.depth_from, s.meta.depth_to) == (depth.start, depth.end)
    assert (s.meta.lat, s.meta.lon, s.meta.elevation) == (
        meta["latitude"].val,
        meta["longitude"].val,
        meta["elevation"].val,
    )
    assert s.meta.variable == "sm" and meta["variable"].val == "soil_moisture"
    # Names (the documented differences aside).
    assert plain(s.meta.station) == plain(meta["station"].val)
    assert plain(s.meta.sensor) == plain(meta["instrument"].val)
    # ismn: the first folder under the root (an archive's top folder where it has one); ours: the
    # file's content, which names one of the folders on the path.
    folders = Path(path).parts[:-1]
    assert meta["network"].val == folders[0]
    assert plain(s.meta.network) in {plain(f) for f in folders}


STATIC_ROOTS = [
    "Data_seperate_files_header_20170810_20180809",
    "zip_archives/ceop/Data_seperate_files_20170810_20180809.zip",
    "zip_archives/multinetwork/header_values/Data_header_values.zip",
]


def ismn_sensors(root: Path) -> dict[str, Any]:
    """{station: ismn metadata} from ISMN_Interface (it writes python_metadata/ beside `root`)."""
    ds = ismn_interface.ISMN_Interface(str(root), parallel=False)
    out = {}
    for _, station, sensor in ds.collection.iter_sensors():
        out[station.name] = sensor.metadata
    return out


@pytest.mark.parametrize("rel", STATIC_ROOTS)
def test_same_site_properties_as_ismn_interface(rel: str, tmp_path: Path) -> None:
    src_root = ISMN_DATA / rel
    root = tmp_path / src_root.name
    (shutil.copytree if src_root.is_dir() else shutil.copy)(src_root, root)  # ismn writes beside it
    ref = ismn_sensors(root)
    sources = inventory(str(root)).data
    assert len(ref) == len(sources) > 0
    for src in sources:
        s = ours(src)
        m = ref[Path(src.name).name.split("_")[2]]
        if src.static is None:
            assert np.isnan(m["clay_fraction"].val) and m["climate_KG"].val == "unknown"
            continue
        statics, rejected = parse_static_variables(src.static.name, read_source(src.static))
        assert rejected == []
        site = statics.for_depth(s.meta.depth_from, s.meta.depth_to)
        for ours_key, ismn_key in (
            ("clay", "clay_fraction"),
            ("sand", "sand_fraction"),
            ("silt", "silt_fraction"),
        ):
            assert getattr(site, ours_key) * 100 == pytest.approx(m[ismn_key].val, abs=1e-9)
        assert site.organic_carbon * 100 == pytest.approx(m["organic_carbon"].val, abs=1e-9)
        assert site.saturation == m["saturation"].val
        assert site.land_cover == float(m["lc_2010"].val)
        assert site.climate_class == m["climate_KG"].val


def test_ismn_datafile_rejects_what_we_quarantine(tmp_path: Path) -> None:
    """Both refuse the malformed fixture (as a station file)."""
    bad = tmp_path / "NET" / "ST"
    bad.mkdir(parents=True)
    f = bad / "XX_NET_ST_sm_0.050000_0.050000_P_20200101_20200102.stm"
    f.write_bytes((ISMN_DATA / "malformed" / "mal_formed_file.txt").read_bytes())
    with pytest.raises(Exception):  # noqa: B017  (ismn raises IOError or IndexError)
        ismn_filehandlers.DataFile(str(tmp_path), "NET/ST/" + f.name).read_data()
    assert reader_for(f.name, f.read_bytes()) is None
