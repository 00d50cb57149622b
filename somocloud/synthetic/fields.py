"""Random building blocks of the synthetic world: seeded streams, smooth noise fields, AR(1) series.

Every component draws from its own stream `rng_for(seed, "name")`, so adding draws to one component
never changes another and the world is reproducible from `synthetic.seed` alone.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import lfilter


def rng_for(seed: int, component: str) -> np.random.Generator:
    """An independent random stream for `component` of the world built from `seed`.

    Args:
        seed: The world's seed (`synthetic.seed`).
        component: A stable name of the component (e.g. "weather", "statics").
    """
    return np.random.default_rng([seed, zlib.crc32(component.encode())])


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Spatially coherent standard-normal noise: white noise smoothed over the last two axes.

    Args:
        rng: The random stream.
        shape: Output shape; the last two axes are (lat, lon), leading axes are independent fields.
        sigma: Gaussian smoothing length in cells (0: white noise).

    Returns:
        float64 array of `shape` with zero mean and unit variance over all its values. The fields are
        not normalised one by one, so each map keeps its own mean (days differ as a whole).
    """
    noise = rng.standard_normal(shape)
    if sigma > 0:
        sig = (0.0,) * (len(shape) - 2) + (sigma, sigma)
        noise = gaussian_filter(noise, sigma=sig, mode="reflect")
    std = float(noise.std())
    return np.asarray((noise - noise.mean()) / (std if std > 0 else 1.0))


def ar1(innovations: np.ndarray, rho: float) -> np.ndarray:
    """An AR(1) process along axis 0 with unit stationary variance driven by standard-normal innovations.

    Args:
        innovations: (time, ...) standard-normal draws.
        rho: Lag-1 autocorrelation in [0, 1).
    """
    scale = np.sqrt(1.0 - rho**2)
    out = lfilter([scale], [1.0, -rho], innovations, axis=0)
    # start in the stationary distribution instead of at zero
    decay = rho ** np.arange(innovations.shape[0], dtype="float64")
    decay = decay.reshape((-1,) + (1,) * (innovations.ndim - 1))
    return np.asarray(out + decay * innovations[:1] * (1.0 - scale))


def exp_smooth(x: np.ndarray, timescale: float) -> np.ndarray:
    """Causal exponential smoothing along axis 0 with e-folding `timescale` steps, starting at x[0]."""
    if timescale <= 0:
        return x.copy()
    a = float(np.exp(-1.0 / timescale))
    return np.asarray(lfilter([1.0 - a], [1.0, -a], x - x[:1], axis=0) + x[:1])
