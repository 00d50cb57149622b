"""somocloud: a cloud-native machine-learned soil moisture data product (SoMo.ml method)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("somocloud")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
