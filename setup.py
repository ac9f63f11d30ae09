"""Builds the one compiled module, gateway/media/_native.pyx (everything else is in
pyproject.toml). Without a C compiler the package still installs, and the gateway
forwards media on its Python path alone, at several times the CPU per packet
(docs/decisions/0009-compiled-forwarding.md)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = cythonize(
    [Extension("gateway.media._native", ["gateway/media/_native.pyx"])],
    compiler_directives={"language_level": "3"},
)
for extension in extensions:
    extension.optional = True  # cythonize does not carry it over

setup(ext_modules=extensions)
