"""Test configuration: fake 8 CPU devices for sharding tests and strict rank promotion.

XLA_FLAGS must be set before JAX is imported anywhere, hence at the top of conftest.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Many tests compile the same small programs (a tiny model's train step, its samplers): a persistent
# compilation cache shared by the session's tests compiles each once.
_CACHE = Path(os.environ.get("PROTGEN_TEST_JAX_CACHE", "/tmp/protgen_jax_test_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    for candidate in (
        os.environ.get("PROTGEN_DATA_DIR"),
        REPO_ROOT.parent / "shared" / "data",
    ):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (`../shared/data` or $PROTGEN_DATA_DIR); skips if absent."""
    path = _shared_data_dir()
    if path is None:
        pytest.skip("real data folder ../shared/data not found")
    return path
