"""A long-running server's resident memory kept close to what it really holds (glibc; a no-op elsewhere).

The engine allocates tensors whose sizes change every step (KV caches one position longer, batches that change
shape, logits and masks per step). glibc raises its mmap threshold each time such a block is freed, after which
big blocks come from the heap instead and are kept there when freed: resident memory grows far past the live
tensors (measured in bench/results/aime.md). A fixed threshold returns big blocks to the OS when they are freed,
and a periodic `malloc_trim` returns what the heap keeps. oneDNN keeps up to 1,024 compiled kernels, one per
matmul shape, and a server meets a new shape at almost every step (the attention's key length grows by one); a
smaller cache still holds the weight matmuls' few shapes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024   # glibc's own starting value, kept fixed instead of rising
ONEDNN_CACHED_KERNELS = "128"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def fix_mmap_threshold() -> bool:
    """Stop glibc from raising its mmap threshold (True when it took effect)."""
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS (True when some were released)."""
    libc = _libc()
    return bool(libc and libc.malloc_trim(0))


def limit_kernel_cache() -> None:
    """A smaller oneDNN kernel cache, unless the user set one; only takes effect before torch is imported."""
    if "torch" not in sys.modules:
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHED_KERNELS)
