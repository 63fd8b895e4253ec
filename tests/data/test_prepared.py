"""Reading a prepared dataset: a damaged arrays.npz is one DataError naming the folder, never a traceback."""
from __future__ import annotations

import shutil

import pytest

from pipeline.data.prepared import load_prepared
from pipeline.errors import DataError


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "empty"])
def test_load_prepared__damaged_arrays_are_a_data_error(tmp_path, digits_dir, keep):
    data = tmp_path / "digits"
    shutil.copytree(digits_dir, data)
    arrays = data / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[: int(arrays.stat().st_size * keep)])
    with pytest.raises(DataError, match=r"digits: cannot read prepared dataset \((BadZipFile|EOFError|ValueError)"):
        load_prepared(data)


def test_load_prepared__intact_arrays_match_their_card(digits_dir):
    assert load_prepared(digits_dir).x["train"].shape[0] == 1137
