"""One real local Ray per test session (2 CPUs), shared by every test that needs it."""

import os

import pytest


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
