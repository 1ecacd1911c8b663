"""Executors schedule work units; they know nothing of the job. The only module that imports Ray.

``RayExecutor(workers=N)`` starts a local Ray with N CPUs (or joins ``address``, e.g. ``auto`` or
``ray://head:10001`` for a cluster) and runs each unit as one Ray task with one CPU, yielding results
as tasks finish. At most ``parallelism`` tasks are in flight — N, or all the cluster's CPUs when
joining without N — so ``workers`` means the same on a shared Ray as on our own, and the driver holds
a bounded number of task references however many units a job has. A Ray already initialised in this
process (a test session, a notebook) is reused and left running.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

from wamdata.errors import ConfigError

log = logging.getLogger(__name__)


class RayExecutor:
    def __init__(self, workers: int | None = 2, address: str | None = None, max_retries: int = 1):
        self.workers = workers
        self.address = address
        self.max_retries = max_retries
        self._started = False

    def __enter__(self) -> "RayExecutor":
        import ray

        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except ConnectionError as err:
                    # `ray start` turns token authentication on by default (Ray >= 2.5x) while a
                    # driver defaults to it off; the raw error buries that in a traceback
                    raise ConfigError(
                        f"cannot join the Ray cluster at {self.address!r}: {err}. If the cluster was "
                        "started with token authentication (the default of `ray start`), export "
                        "RAY_AUTH_MODE=token so this driver presents the token in ~/.ray/auth_token"
                    ) from err
            else:
                # "local": a new Ray of our own, even where `ray start` left a cluster on this machine
                ray.init(address="local", num_cpus=self.workers or 2, include_dashboard=False,
                         log_to_driver=False)
            self._started = True
        return self

    @property
    def parallelism(self) -> int:
        """How many units run at once: ``workers``, else every CPU of the Ray we are on."""
        import ray

        return self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def __exit__(self, *exc) -> None:
        import ray

        if self._started:
            ray.shutdown()

    def map_unordered(self, fn: Callable, args: Iterable[tuple], on_error: Callable) -> Iterator:
        """Run ``fn(*a)`` for each ``a`` as a Ray task; a task that fails after its retries (a crashed
        worker, out of memory) becomes ``on_error(a, exception)`` instead of stopping the job."""
        import ray

        remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(fn)
        todo, pending, limit = iter(args), {}, self.parallelism

        def submit() -> None:
            while len(pending) < limit:
                a = next(todo, None)
                if a is None:
                    return
                pending[remote.remote(*a)] = a

        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            a = pending.pop(ref)
            submit()  # keep every slot busy while this result is committed
            try:
                yield ray.get(ref)
            except (ray.exceptions.RayError, OSError) as err:
                log.error("work unit failed: %s", err)
                yield on_error(a, err)
