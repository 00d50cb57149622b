"""The `forcing` step: hourly source → daily, pixel-chunked `forcing` cube and `reference_sm`.

`build_forcing` is the step entry (CLI verb `forcing`); sources and their lexicons live in
`somocloud.forcing.sources`, the Dask build in `somocloud.forcing.build`."""

from somocloud.forcing import daily  # noqa: F401  (registers the daily sources)
from somocloud.forcing.build import BuildReport, build_forcing, run_forcing_build

__all__ = ["BuildReport", "build_forcing", "run_forcing_build"]
