"""One writer per dataset: a lock file naming the job that holds it.

A conversion (or any job that commits into a dataset) holds ``<dataset>/_writer.lock`` from before it
opens the index until it ends. A second job on the same output refuses to start, naming the holder
(host, pid, command, since when): two drivers would discard each other's temporary shards and number
shards twice. A lock left by a dead process on this host (the driver was SIGKILLed or the machine
rebooted) is detected by its pid and taken over with a warning; a lock of another host cannot be
checked from here, so the error says how old it is and how to remove it.

On the local filesystem the lock is created with ``O_CREAT | O_EXCL``, atomic against a concurrent
start. Object stores have no exclusive create: there the check-then-write leaves a window of one
round trip, which guards against the usual mistake (a job started twice) but not a race by design.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

from wamdata.errors import ConfigError, OutputError
from wamdata.format import layout
from wamdata.sources import is_local

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


class WriterLock:
    """``with WriterLock(url, "convert --source droid"): ...`` — raises ConfigError if held."""

    def __init__(self, url: str, job: str):
        self.fs, self.root = layout.open_fs(url)
        self.path = layout.join(self.root, layout.LOCK_FILE)
        self.url = url
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "job": job,
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "t": time.time()}
        self._local = is_local(self.fs)

    def __enter__(self) -> "WriterLock":
        try:
            return self._acquire()
        except OSError as e:   # a read-only or full output: the job cannot start, and says why
            raise OutputError.of(self.root, e) from e

    def _acquire(self) -> "WriterLock":
        self.fs.makedirs(self.root, exist_ok=True)
        for _ in range(2):   # a second try after removing a dead process's lock
            if self._create():
                return self
            held = self._read()
            if held is None:
                continue   # removed between our attempt and the read: try again
            if held.get("host") == self.holder["host"] and not _alive(int(held.get("pid", -1))):
                log.warning("%s: removing the stale lock of process %s (no longer running), started %s by %r",
                            self.url, held.get("pid"), held.get("since"), held.get("job"))
                self.fs.rm(self.path)
                continue
            age = time.time() - float(held.get("t", time.time()))
            raise ConfigError(
                f"{self.url}: another job is writing this dataset: {held.get('job')!r}, pid {held.get('pid')} on "
                f"{held.get('host')}, since {held.get('since')} ({age / 60:.0f} min ago). Wait for it to finish; if "
                f"that job is gone (a lock of another host cannot be checked from here), remove {self.path}")
        raise ConfigError(f"{self.url}: could not take the writer lock {self.path}")

    def _create(self) -> bool:
        data = json.dumps(self.holder).encode()
        if self._local:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, data)
        return True

    def _read(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except ValueError:   # a lock cut short by a crash mid-write: nobody can be holding it
            return {"host": self.holder["host"], "pid": -1}

    def __exit__(self, *exc) -> None:
        try:
            held = self._read()
            if held and held.get("pid") == self.holder["pid"] and held.get("host") == self.holder["host"]:
                self.fs.rm(self.path)
        except OSError as e:   # the output went read-only under us: the next run finds a dead pid
            log.warning("%s: could not remove the writer lock (%s); the next run takes it over", self.url, e)
