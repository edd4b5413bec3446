"""The cache folder where built models (and tuned kernel tiles) are kept.

`$LLMPERF_CACHE_DIR`, else `$XDG_CACHE_HOME/pytest-llmperf`, else `~/.cache/pytest-llmperf`;
built models live in `<cache>/models/<name>-v<N>/` (bump N whenever a recipe changes, so stale
caches are ignored).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def default_cache_dir() -> Path:
    """Where pytest-llmperf caches built models (see the module docstring)."""
    explicit = os.environ.get("LLMPERF_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pytest-llmperf"


def cache_dir_source() -> str:
    """Where `default_cache_dir` came from, for messages about it."""
    if os.environ.get("LLMPERF_CACHE_DIR"):
        return "LLMPERF_CACHE_DIR"
    if os.environ.get("XDG_CACHE_HOME"):
        return "XDG_CACHE_HOME (the cache folder is $XDG_CACHE_HOME/pytest-llmperf)"
    return "the cache folder (~/.cache/pytest-llmperf; LLMPERF_CACHE_DIR moves it)"


def model_dir(dirname: str, cache_dir: Path | None = None) -> Path:
    """Where the built model `dirname` is kept, built or not."""
    return (cache_dir if cache_dir is not None else default_cache_dir()) / "models" / dirname


def cached_model(dirname: str, build: Callable[[Path], None], cache_dir: Path | None) -> Path:
    """`<cache>/models/<dirname>`, built by `build` first if the cache lacks it.

    Safe to call from several processes at once (pytest-xdist workers): one builds
    under a file lock, into a temporary directory renamed into place when complete,
    so a reader never sees a half-written model.
    """
    dest = model_dir(dirname, cache_dir)
    models = dest.parent
    if dest.is_dir():
        return dest
    models.mkdir(parents=True, exist_ok=True)
    with open(models / f"{dirname}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not dest.is_dir():  # another process may have built it while we waited
                tmp = Path(tempfile.mkdtemp(prefix=f".{dirname}.", dir=models))
                try:
                    build(tmp)
                    # mkdtemp and safetensors make private files; the cache is shared.
                    tmp.chmod(0o755)
                    for file in tmp.iterdir():
                        file.chmod(0o644)
                    os.rename(tmp, dest)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return dest
