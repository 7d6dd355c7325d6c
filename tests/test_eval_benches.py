"""The registered benches' loaders: CHiSafetyBench is read from a data root or from its own folder."""

import pytest

from r1probe.errors import DataError
from r1probe.eval.benches import get_bench
from r1probe.eval.runner import _data_hashes


def test_chisafety_loads_from_a_data_root_or_its_own_folder(shared_data, tmp_path):
    if not (shared_data / "chisafetybench").exists():
        pytest.skip("CHiSafetyBench is not in the shared data folder")
    b = get_bench("chisafety-refusal")
    from_root = b.load(str(shared_data))
    from_folder = b.load(str(shared_data / "chisafetybench"))
    assert from_root and [x.id for x in from_root] == [x.id for x in from_folder]
    assert _data_hashes(b, str(shared_data)) == _data_hashes(b, str(shared_data / "chisafetybench"))
    assert "missing" not in _data_hashes(b, str(shared_data / "chisafetybench")).values()
    with pytest.raises(DataError, match="CHiSafetyBench file not found"):
        b.load(str(tmp_path))
