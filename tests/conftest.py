import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_result_cache(tmp_path_factory):
    """The app's shared result cache (drnet_app.result_cache) in a directory of this test run's own, for
    the app under test and the servers it starts: no result from another checkout or run is served."""
    os.environ["DRNET_RESULT_CACHE_DIR"] = str(tmp_path_factory.mktemp("results"))
