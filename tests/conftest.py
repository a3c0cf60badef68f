import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="session")
def private_result_cache(tmp_path_factory):
    """The app's shared result cache (drnet_core.result_cache) in a directory of this test run's own, for
    the app under test and the servers it starts: no result from another checkout or run is served."""
    os.environ["DRNET_RESULT_CACHE_DIR"] = str(tmp_path_factory.mktemp("results"))
