from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from codebooks.bundle import Bundle
from codebooks.export import write_exports
from codebooks.sid import format_sid


def test_items_and_sids_round_trip_through_parquet(tmp_path: Path, bundle: Bundle) -> None:
    items_path, sids_path = write_exports(bundle, tmp_path)
    items = pq.read_table(items_path).to_pydict()
    assert items["item_id"] == bundle.item_ids.tolist()
    np.testing.assert_array_equal(np.array(items["rq"]), bundle.rq_codes)
    np.testing.assert_array_equal(np.array(items["suffix"]), bundle.sid_suffix)
    vq = np.array(items["vq"])
    assert vq.shape == (bundle.manifest.n_items, bundle.manifest.k)
    np.testing.assert_array_equal(vq[:, 0], np.arange(bundle.manifest.n_items))  # itself first
    assert len(set(items["sid"])) == len(items["sid"])  # semantic IDs are unique
    assert items["sid"][7] == format_sid(bundle.rq_codes[7], int(bundle.sid_suffix[7]))

    sids = pq.read_table(sids_path).to_pydict()
    assert dict(zip(sids["sid"], sids["item_id"], strict=True)) == dict(
        zip(items["sid"], items["item_id"], strict=True)
    )
    keys = [tuple(int(c) for c in sid.split("-")) for sid in sids["sid"]]
    assert keys == sorted(keys)  # items sharing an RQ prefix are contiguous


def test_vq_codes_can_be_left_out(tmp_path: Path, bundle: Bundle) -> None:
    items_path, _ = write_exports(bundle, tmp_path, vq=False)
    assert "vq" not in pq.read_table(items_path).column_names
