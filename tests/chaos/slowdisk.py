"""A slow disk for chosen members: an LD_PRELOAD shim that delays fsync.

Durability in kvstore is LMDB's sync at each write transaction (fdatasync,
fsync or msync by LMDB's build), so the latency a slow disk adds is there.
The shim wraps those three calls of libc and, before each, sleeps for the
number of milliseconds written in the file named by ``CHAOS_DISK_DELAY_FILE``
(no file or 0: no delay). It is read at every call, so the harness turns a
member's disk slow and fast again while it runs, without restarting it, and
only the member processes started with the shim are affected.

The shim is compiled on first use with the machine's C compiler (gcc is part
of the project's machine; DESIGN's tests run there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["DELAY_ENV", "build_shim", "set_delay"]

DELAY_ENV = "CHAOS_DISK_DELAY_FILE"
COMPILE_TIMEOUT = 120.0

_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void chaos_slow(void) {
    const char *path = getenv("CHAOS_DISK_DELAY_FILE");
    if (path == NULL) return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = 0;
    long ms = strtol(buf, NULL, 10);
    if (ms <= 0) return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    chaos_slow();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    chaos_slow();
    return real(fd);
}

int msync(void *addr, size_t length, int flags) {
    static int (*real)(void *, size_t, int);
    if (real == NULL) real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "msync");
    if (flags & MS_SYNC) chaos_slow();
    return real(addr, length, flags);
}
"""


def build_shim(directory: Path) -> Path:
    """Compile the shim into ``directory`` (once); the shared object's path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "libchaosdisk.so"
    if target.exists():
        return target
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("the slow-disk nemesis needs a C compiler (gcc) to build its shim")
    source = directory / "chaosdisk.c"
    source.write_text(_SOURCE)
    partial = directory / "libchaosdisk.so.tmp"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(source), "-ldl"],
        check=True,
        capture_output=True,
        timeout=COMPILE_TIMEOUT,
    )
    partial.rename(target)
    return target


def set_delay(path: Path, milliseconds: int) -> None:
    """Make every sync of the processes reading ``path`` take ``milliseconds`` longer."""
    partial = path.with_suffix(".tmp")
    partial.write_text(str(max(0, int(milliseconds))))
    os.replace(partial, path)  # atomic: the shim never reads half a number
