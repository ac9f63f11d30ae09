"""Builds the compiled modules (everything else is in pyproject.toml):
gateway/media/_native.pyx, and the plain Python modules whose state it reads and writes
(counters, nack, receive_statistics, rtp_history, rtp_rewriter), with the C fields their .pxd files
declare. Without a C compiler the package still installs, and the gateway forwards
media on its Python path alone, at several times the CPU per packet
(docs/decisions/0009-compiled-forwarding.md)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = {
    # plain Python files, compiled with the C fields of their .pxd
    "gateway.media.counters": "gateway/media/counters.py",
    "gateway.media.nack": "gateway/media/nack.py",
    "gateway.media.receive_statistics": "gateway/media/receive_statistics.py",
    "gateway.media.rtp_history": "gateway/media/rtp_history.py",
    "gateway.media.rtp_rewriter": "gateway/media/rtp_rewriter.py",
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
