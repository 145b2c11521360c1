"""proc_volume@1 shards: what record-proc writes, the reader reads back exactly; a damaged,
unknown or mismatched shard is refused with its file named (or counted with --skip-bad)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from malsensor.daemon.proc.columns import W
from malsensor.daemon.proc.sampler import ProcSampler
from malsensor.daemon.views.proc_volume import PROC_VOLUME, ProcVolumeOptions, ProcVolumeRouter
from malsensor.models.data.load import DataOptions
from malsensor.models.data.procshards import INDEX, READER, load_shard, write_shard
from malsensor.models.data.table import DataStats
from malsensor.models.errors import TrainError

VIEW = PROC_VOLUME.info(ProcVolumeOptions(steps=2, processes=8))


def _volumes(n: int, steps: int = 2, h: int = 8) -> list:
    s, r, out = ProcSampler(), ProcVolumeRouter(steps, h, 0), []
    while len(out) < n:
        v = r.push(s.sample())
        if v is not None:
            out.append(v)
        time.sleep(0.02)
    return out


def test_round_trip(tmp_path):
    vols = _volumes(3)
    a = write_shard(tmp_path, "benign", vols, 0.02)
    b = write_shard(tmp_path, "miner/x", vols[:1], 0.02)
    c = write_shard(tmp_path, "miner/x", vols[1:], 0.02)  # the same second: another name
    assert c != b and b.exists() and c.exists()
    idx = json.loads((tmp_path / INDEX).read_text())
    assert (idx["version"], idx["steps"], idx["processes"], len(idx["columns"])) == (1, 2, 8, W)
    assert [(s["file"], s["label"], s["volumes"]) for s in idx["shards"]] == [
        (a.name, "benign", 3), (b.name, "miner/x", 1), (c.name, "miner/x", 2)]
    assert b.name.startswith("miner_x-")
    st = DataStats()
    part = READER.read(a, READER.file_type(a), VIEW, DataOptions(), st)
    assert part.x.shape == (3, 2, 8, W) and part.x.dtype == np.float32 and st.rows_read == 3
    assert np.array_equal(part.x, np.stack([v.x for v in vols]))
    assert part.label == ["benign"] * 3
    got = load_shard(a)
    assert got["pid"].tolist() == [v.pid.tolist() for v in vols]
    assert got["comm"][0].tolist() == [c[:15] for c in vols[0].comm]
    assert READER.file_type(tmp_path / INDEX) is None
    with pytest.raises(TrainError, match=r"holds volumes of 2 steps x 8 processes; this recording makes 3 x 8"):
        write_shard(tmp_path, "x", _volumes(1, steps=3), 0.02)


def test_bad_shards_are_named_and_counted(tmp_path):
    a = write_shard(tmp_path, "benign", _volumes(1), 0.02)
    data = a.read_bytes()
    # changed after the index was written
    a.write_bytes(data[:-10])
    with pytest.raises(TrainError, match=rf"^{a}: sha256 differs from {tmp_path / INDEX}"):
        READER.read(a, "proc_shard", VIEW, DataOptions(), DataStats())
    st = DataStats()
    part = READER.read(a, "proc_shard", VIEW, DataOptions(skip_bad=True), st)
    assert part.n == 0 and st.bad_rows == 1
    # not in the index: read without a checksum, but a truncated zip is still refused
    (tmp_path / INDEX).unlink()
    with pytest.raises(TrainError, match=rf"^{a}: not a readable shard \(BadZipFile"):
        READER.read(a, "proc_shard", VIEW, DataOptions(), DataStats())
    # an unknown format version, an object array (pickle), a shape the model does not read
    a.write_bytes(data)
    z = dict(np.load(a))
    np.savez(a, **{**z, "format_version": np.array([2])})
    with pytest.raises(TrainError, match=rf"^{a}: format_version 2 is not known \(this reader reads 1\)"):
        READER.read(a, "proc_shard", VIEW, DataOptions(), DataStats())
    np.savez(a, **{**z, "label": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(TrainError, match=rf"^{a}: not a readable shard \(ValueError: .*allow_pickle"):
        READER.read(a, "proc_shard", VIEW, DataOptions(), DataStats())
    np.savez(a, **z)
    other = PROC_VOLUME.info(ProcVolumeOptions(steps=4, processes=8))
    with pytest.raises(TrainError, match=rf"^{a}: volumes of shape \[2, 8, 45\]; the model reads proc_volume@1 "
                                         r"with shape \[4, 8, 45\]"):
        READER.read(a, "proc_shard", other, DataOptions(), DataStats())
