"""The suite runs in its own HOME and cache (conftest.py), whatever the caller's environment:
files left on the machine cannot decide a test."""
import tempfile
from pathlib import Path

from avalanche_cts.cache import cache_root


def test_home_and_cache_are_the_suites_own():
    tmp = Path(tempfile.gettempdir()).resolve()
    for path, prefix in ((Path.home(), "cts-home-"), (cache_root(), "cts-cache-")):
        path = path.resolve()
        assert path.parent == tmp and path.name.startswith(prefix), path
