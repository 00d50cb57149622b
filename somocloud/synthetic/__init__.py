"""The synthetic world (demo and tests): hourly ERA5-layout forcing, statics, DEM, truth and ISMN files.

Entry: `build_world(cfg, ctx)` (CLI verb `synthetic`). `generate_world(cfg)` gives the same world in
memory (intended daily values, truth, stations) for checks.
"""

from somocloud.synthetic.world import World, build_world, generate_world

__all__ = ["World", "build_world", "generate_world"]
