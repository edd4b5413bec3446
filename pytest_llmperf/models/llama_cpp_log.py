"""llama.cpp's own log, kept instead of printed: its lines are read when something fails.

Shared by the GGUF writer (quantizing) and the llama.cpp engine, which both call into the
C library.
"""

from __future__ import annotations

import collections
import ctypes
from typing import Any

#: llama.cpp's log lines, most recent last: read when something fails, never printed.
LOG: collections.deque[str] = collections.deque(maxlen=200)


def _keep_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    LOG.append(text.decode("utf-8", "replace"))


_LOG_CALLBACK: Any = None


def quiet_llama_cpp() -> None:
    """Send llama.cpp's log to `LOG` instead of stderr (idempotent).

    The C library keeps the callback's address for good, so the ctypes object lives in
    this module for the life of the process: one held by an engine would be freed with
    it and the next log line would jump into freed memory.
    """
    global _LOG_CALLBACK
    import llama_cpp

    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp.llama_log_callback(_keep_log)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
