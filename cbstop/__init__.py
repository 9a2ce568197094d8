"""cbstop: the ChargebackStop Integrations API, self-hosted."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cbstop")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
