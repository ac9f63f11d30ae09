"""Builds the one compiled module, gateway/media/_native.pyx (everything else is in
pyproject.toml). Without a C compiler the package still installs, and the gateway
forwards media on its Python path alone, at several times the CPU per packet
(docs/decisions/0009-compiled-forwarding.md)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

SOURCE = "gateway/media/_native.pyx"

extensions = []
if Path(SOURCE).exists():  # not in deploy/Dockerfile's dependencies-only layer
    extensions = cythonize(
        [Extension("gateway.media._native", [SOURCE])],
        compiler_directives={"language_level": "3"},
    )
for extension in extensions:
    extension.optional = True  # cythonize does not carry it over

setup(ext_modules=extensions)
