"""Allocator settings for long-running processes (core/allocator.py): effective on glibc, a user's own kept."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from recursa.core import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt and malloc_trim")


@glibc
def test_the_mmap_threshold_is_fixed_and_free_heap_pages_can_be_released():
    assert allocator.fix_mmap_threshold() is True
    blocks = [bytearray(64 * 1024 - 64) for _ in range(2000)]   # under the threshold: heap blocks
    del blocks
    assert isinstance(allocator.release_free_memory(), bool)


def _kernel_cache_setting(env: dict[str, str], import_torch_first: bool) -> str:
    code = ("import os, sys\n" + ("import torch\n" if import_torch_first else "") +
            "from recursa.core.allocator import limit_kernel_cache\nlimit_kernel_cache()\n"
            "print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY', 'unset'))\n")
    clean = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    done = subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_kernel_cache_is_limited_before_torch_loads_and_a_users_value_is_kept():
    assert _kernel_cache_setting({}, import_torch_first=False) == allocator.ONEDNN_CACHED_KERNELS
    assert _kernel_cache_setting({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "7"}, import_torch_first=False) == "7"
    # too late once torch is loaded: setting it then would claim a limit that oneDNN never read
    assert _kernel_cache_setting({}, import_torch_first=True) == "unset"
