"""An exclusive, non-blocking lock per output folder, so two runs never write the same results.

Snakemake locks its working directory and DVC its repo, but neither locks against the other: a `snakemake` and a
`dvc repro` started together would both run the same stage. The stage takes this lock first; the second run stops
with one line. The kernel drops the lock when the process dies, so a killed run never leaves it stale.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError

LOCK_NAME = ".lock"


class LockError(PipelineError):
    """Another process is writing the same outputs."""


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `folder`/.lock for the duration of the block.

    Raises:
        LockError: another process holds it (its pid is named).
    """
    folder = Path(folder)
    created = [d for d in (folder, *folder.parents) if not d.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockError(f"{folder} is being written by another run (pid {holder}); wait for it to finish")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        # a run that wrote nothing (a bad param, say) leaves no folder behind that it made for its lock
        if created and [f.name for f in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()
            for d in created:
                with contextlib.suppress(OSError):  # not empty: something else lives there now
                    d.rmdir()
        os.close(fd)
