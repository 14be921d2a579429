"""Counting Python allocator calls: a hook around CPython's MEM and OBJ allocator domains.

tracemalloc only sees blocks that are still alive; what the data path costs is the number of
allocation *events* (every bytes object, every temporary). A tiny C hook, compiled here with the
machine's C compiler against this interpreter's headers, wraps ``PyMem_*``/``PyObject_*``
allocators (the documented hook mechanism, ``PyMem_SetAllocator``) and counts malloc, calloc and
realloc calls while enabled. The code is ours and built into a temporary directory at run time.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sysconfig
import tempfile
from types import TracebackType

_SOURCE = r"""
#include <Python.h>
static PyMemAllocatorEx orig_mem, orig_obj;
static unsigned long long count = 0;
static int active = 0;
#define ORIG ((PyMemAllocatorEx *)ctx)
static void *c_malloc(void *ctx, size_t n) {
    if (active) count++;
    return ORIG->malloc(ORIG->ctx, n);
}
static void *c_calloc(void *ctx, size_t e, size_t n) {
    if (active) count++;
    return ORIG->calloc(ORIG->ctx, e, n);
}
static void *c_realloc(void *ctx, void *p, size_t n) {
    if (active) count++;
    return ORIG->realloc(ORIG->ctx, p, n);
}
static void c_free(void *ctx, void *p) { ORIG->free(ORIG->ctx, p); }
void install(void) {
    PyMemAllocatorEx hook;
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
    hook = (PyMemAllocatorEx){&orig_mem, c_malloc, c_calloc, c_realloc, c_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &hook);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);
    hook = (PyMemAllocatorEx){&orig_obj, c_malloc, c_calloc, c_realloc, c_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook);
}
void set_active(int on) { active = on; }
unsigned long long get_count(void) { return count; }
"""

_lib: ctypes.PyDLL | None = None


class Counter:
    """``with counter:`` counts allocator calls made inside the block into ``count``."""

    def __init__(self, lib: ctypes.PyDLL) -> None:
        self._lib = lib
        self.count = 0

    def __enter__(self) -> Counter:
        self._start = self._lib.get_count()
        self._lib.set_active(1)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lib.set_active(0)
        self.count += self._lib.get_count() - self._start


def allocation_counter() -> Counter:
    """A counter; RuntimeError when no C compiler is available."""
    global _lib
    if _lib is None:
        directory = tempfile.mkdtemp(prefix="allochook-")
        source = os.path.join(directory, "hook.c")
        library = os.path.join(directory, "hook.so")
        with open(source, "w") as f:
            f.write(_SOURCE)
        include = sysconfig.get_paths()["include"]
        try:
            subprocess.run(
                ["cc", "-O2", "-shared", "-fPIC", f"-I{include}", source, "-o", library],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(f"cannot build the allocation hook: {exc}") from exc
        _lib = ctypes.PyDLL(library)
        _lib.get_count.restype = ctypes.c_ulonglong
        _lib.install()
    return Counter(_lib)
