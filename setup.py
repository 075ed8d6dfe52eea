"""tokenrelay's build. Plain Python by default; `TOKENRELAY_COMPILE=1` compiles the modules a
relayed token runs through with mypyc, for less CPU per token (benchmarks/RESULTS.md,
2026-11-30). mypyc type-checks the code against its dependencies, so the compiled build needs
them installed first, with mypy, a C compiler and Python's headers (README, "The compiled
build"):

    pip install 'setuptools>=68' wheel -e '.[test]'
    TOKENRELAY_COMPILE=1 pip install --no-build-isolation --no-deps --force-reinstall .

Not editable (`-e`): an editable compiled build puts the extensions next to the sources, where
every environment using that tree would import them.
"""

from __future__ import annotations

import os

from setuptools import setup

# The per-token path (mypyc compiles whole modules). Left out: providers/http1.py, which
# mypyc cannot compile (its exceptions subclass built-in ones), and server/eager_send.py,
# which compiles but has not had the suite run against it compiled.
COMPILED = [
    "src/tokenrelay/events.py",
    "src/tokenrelay/metrics.py",
    "src/tokenrelay/sse.py",
    "src/tokenrelay/timers.py",
    "src/tokenrelay/wire/native.py",
    "src/tokenrelay/wire/openai.py",
    "src/tokenrelay/streams/log_memory.py",
    "src/tokenrelay/streams/stream.py",
    "src/tokenrelay/server/live.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("TOKENRELAY_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3"))


setup(ext_modules=ext_modules())
