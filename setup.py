"""Builds the compiled modules (everything else is in pyproject.toml):
gateway/media/_native.pyx, and gateway/media/counters.py with the C fields its .pxd
declares. Without a C compiler the package still installs, and the gateway forwards
media on its Python path alone, at several times the CPU per packet
(docs/decisions/0009-compiled-forwarding.md)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = {
    "gateway.media.counters": "gateway/media/counters.py",
    "gateway.media._native": "gateway/media/_native.pyx",
}

extensions = []
if all(Path(source).exists() for source in MODULES.values()):  # not in the Dockerfile's
    extensions = cythonize(  # dependencies-only layer
        [Extension(name, [source]) for name, source in MODULES.items()],
        compiler_directives={"language_level": "3"},
    )
for extension in extensions:
    extension.optional = True  # cythonize does not carry it over

setup(ext_modules=extensions)
