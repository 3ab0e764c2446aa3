"""One synthetic evaluation shared by the report tests (building it takes a second)."""

import pytest

from tests.report._synthetic import make_evaluation


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_evaluation(tmp_path_factory.mktemp("synthetic"))
