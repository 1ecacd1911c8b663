"""One real local Ray per test session (2 CPUs), shared by every test that needs it.

Forking a Ray driver is unsupported (Ray's guide asks DataLoaders for forkserver/spawn): after two
Ray Data executions in a driver, one forked DataLoader leaves its later Ray tasks unfinished
(tests/test_loader_ray.py). ``stream.dataloader()`` avoids fork in a Ray process, but tests of plain
``DataLoader(stream.torch())`` fork this one: tests marked ``forks_workers`` run after every other test.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    forks = [it for it in items if it.get_closest_marker("forks_workers")]
    items[:] = [it for it in items if not it.get_closest_marker("forks_workers")] + forks


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # Ray workers import the test fixtures package (tests.fixtures.*) from the repository root.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
