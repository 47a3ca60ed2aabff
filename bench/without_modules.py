"""Run a module with some packages made unimportable: `python -m bench.without_modules A,B -m bot`.

The benchmark compares one bot process that can import discord.py's optional speed-ups
(orjson, zstandard, ...) with one that cannot, in one environment and one run. Uninstalling
between runs would not compare like with like, so this refuses the imports instead: a finder
placed first on `sys.meta_path` answers every import of a listed top-level package with
ModuleNotFoundError, exactly as if it were not installed (discord.py then falls back to the
standard library's json and to zlib). No sitecustomize, no change to the environment.

Before the module runs, one line on stderr says what discord.py ended up with, so the
benchmark can check that the process measured what it was meant to:
`bench-imports blocked=orjson orjson=False zstd=None`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import runpy
import sys
from collections.abc import Sequence
from types import ModuleType


class RefuseImports(importlib.abc.MetaPathFinder):
    """Makes the listed top-level packages (and everything under them) unimportable."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = frozenset(names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        """Refuse a listed package; leave every other import to the finders after this one."""
        if fullname.partition(".")[0] in self._names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


def describe(blocked: Sequence[str]) -> str:
    """What discord.py will use, once it is imported behind the finder."""
    import discord.utils

    orjson = getattr(discord.utils, "HAS_ORJSON", None)
    zstd = getattr(discord.utils, "_ZSTD_SOURCE", None)
    return f"bench-imports blocked={','.join(blocked) or '-'} orjson={orjson} zstd={zstd}"


def main(argv: Sequence[str]) -> None:
    """`NAMES -m MODULE [ARGS...]`: block NAMES (comma-separated, may be empty), run MODULE."""
    if len(argv) < 3 or argv[1] != "-m":
        raise SystemExit("usage: python -m bench.without_modules NAMES -m MODULE [ARGS...]")
    blocked = [name for name in argv[0].split(",") if name]
    already = [name for name in blocked if name in sys.modules]
    if already:
        raise SystemExit(f"already imported, cannot block: {', '.join(already)}")
    sys.meta_path.insert(0, RefuseImports(blocked))
    print(describe(blocked), file=sys.stderr, flush=True)
    module = argv[2]
    sys.argv = [module, *argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
