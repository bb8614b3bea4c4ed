"""twibridge: answer Twilio phone calls with an AI voice agent, on Trio."""

from importlib.metadata import PackageNotFoundError, version as _dist_version

try:
    # One source for the version: pyproject.toml, as installed (pip -e keeps it current).
    __version__ = _dist_version("twibridge")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
