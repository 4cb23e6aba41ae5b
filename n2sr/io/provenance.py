"""Versions recorded in every output, read without importing the packages themselves.

Importing torch costs seconds and hundreds of MB; steps that never run a network (ingest,
reference, evaluate) still record which torch the environment had, from package metadata.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import n2sr

_PACKAGES = ("torch", "numpy", "zarr", "tifffile", "scikit-image")


def versions() -> dict[str, str]:
    """n2sr, Python, platform and the main dependencies' versions ("" when not installed)."""
    found = {"n2sr": n2sr.__version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = ""
    return found
