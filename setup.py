"""Build the compiled engine, walfast._core, with Cython.

Environment toggles (as asyncpg and msgspec do):
  WALFAST_DEBUG=1     a debug build: -O0 -g and Cython line tracing
  WALFAST_ANNOTATE=1  write the Cython annotation HTML next to the sources
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("WALFAST_DEBUG") == "1"
ANNOTATE = os.environ.get("WALFAST_ANNOTATE") == "1"

macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
cflags = ["-O0", "-g"] if DEBUG else ["-O2"]
cflags += ["-Wall", "-Wno-unused-function"]

extensions = [
    Extension(
        "walfast._core",
        ["walfast/_core.pyx"],
        include_dirs=["walfast"],
        define_macros=macros,
        extra_compile_args=cflags,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        annotate=ANNOTATE,
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            "cdivision": True,
            "linetrace": DEBUG,
        },
    )
)
