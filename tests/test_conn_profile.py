"""The ``conn_profile@1`` view: conn_ctx@1 plus each source MAC's profile.

- the profile arithmetic on known values (EW mean and deviation, running for the first SPAN);
- a full table starts every profile again and counts it;
- no train/serve skew: the daemon's router fed batch by batch against the trainer's capture
  reader on a real capture with several devices (``malsensord --replay`` serving a gbdt on the
  view: tests/test_runtime_devices.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import require_data
from runtime_daemon import trainer_part

from malsensor.daemon.flows import layout as L
from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.pipeline import ConnPipeline
from malsensor.daemon.views.conn_ctx import CONN_CTX_COLUMNS, ConnCtxRouter
from malsensor.daemon.views.conn_profile import (CONN_PROFILE, CONN_PROFILE_COLUMNS, PROFILE_COLUMNS, SPAN,
                                                 ConnProfile, SourceProfiles)


def test_columns_are_conn_ctx_then_the_profile():
    assert CONN_PROFILE.ref == "conn_profile@1" and CONN_PROFILE.shape(CONN_PROFILE.options()) == (62,)
    assert CONN_PROFILE_COLUMNS[:27] == CONN_CTX_COLUMNS
    assert PROFILE_COLUMNS[0] == "src_dur_mean" and PROFILE_COLUMNS[17] == "src_dur_std"
    assert PROFILE_COLUMNS[-1] == "src_conns" and len(PROFILE_COLUMNS) == 35


def test_profile_values_by_hand():
    """Span 3 (alpha 0.5): a running mean for the first 3, then weight 0.5; another key in
    between has a profile of its own; NaN counts as 0."""
    p = SourceProfiles(span=3)
    x = np.zeros((6, 17))
    x[:, 0] = [1.0, 3.0, 100.0, 5.0, 7.0, 11.0]
    x[1, 2] = np.nan
    out = p.update(np.array([10, 10, 20, 10, 10, 10]), x)
    # key 10: 1 | 1, 3 (mean 2, var 1) | 3rd: weight max(0.5, 1/3) = 0.5: d = 3, mean 3.5,
    # var 0.5 * (1 + 0.5 * 9) = 2.75 | d = 3.5: mean 5.25, var 0.5 * (2.75 + 0.5 * 12.25) = 4.4375
    # | d = 5.75: mean 8.125, var 0.5 * (4.4375 + 0.5 * 33.0625) = 10.484375
    np.testing.assert_array_equal(out[[0, 1, 3, 4, 5], 0], [1.0, 2.0, 3.5, 5.25, 8.125])
    np.testing.assert_array_equal(out[[0, 1, 3, 4, 5], 17],
                                  [0.0, 1.0, math.sqrt(2.75), math.sqrt(4.4375), math.sqrt(10.484375)])
    np.testing.assert_array_equal(out[:, 34], [1, 2, 1, 3, 3, 3])   # held connections, at most the span
    assert out[2, 0] == 100.0 and out[2, 17] == 0.0                  # key 20: itself
    np.testing.assert_array_equal(out[:2, 2], [0.0, 0.0])            # the NaN is a 0
    # batch by batch is the same arithmetic
    q = SourceProfiles(span=3)
    parts = [q.update(np.array(k), x[i:j]) for k, (i, j) in (([10, 10], (0, 2)), ([20, 10, 10, 10], (2, 6)))]
    np.testing.assert_array_equal(np.concatenate(parts), out)


def test_a_full_table_starts_every_profile_again(caplog):
    p = SourceProfiles(span=4, max_sources=2)
    x = np.arange(5 * 17, dtype=np.float64).reshape(5, 17)
    out = p.update(np.array([1, 2, 1, 3, 1]), x)
    # 1, 2 held; 1 again (2 connections); 3 is the third source: cleared, 3 and then 1 start again
    np.testing.assert_array_equal(out[:, 34], [1, 1, 2, 1, 1])
    np.testing.assert_array_equal(out[4, :17], x[4])
    assert p.resets == 1 and "more than 2 source MACs" in caplog.text
    with pytest.raises(ValueError, match="3 keys for 5 rows"):
        p.update(np.array([1, 2, 3]), x)


def test_router_batch_by_batch_equals_the_trainer_reader():
    """The daemon's path (ConnPipeline batches -> the view's router) and the trainer's capture
    reader give the same 62 columns, bit for bit, on a real capture with several source MACs."""
    from malsensor.daemon.capture.pcapfile import read_capture

    capture = require_data("pcap/stratosphere_scanning_host.pcap")
    part = trainer_part(CONN_PROFILE.info(), capture)
    router = CONN_PROFILE.router(CONN_PROFILE.options(), None)
    assert isinstance(router, ConnCtxRouter)
    got, macs = [], []
    for cb in ConnPipeline(TrackerConfig()).run(read_capture(capture, chunk_bytes=64 << 10)):
        rows = router.route(cb)
        if rows is not None:
            got.append(rows.x)
            macs.append(rows.keys[:, L.SRC_MAC])
    x, mac = np.concatenate(got), np.concatenate(macs)
    assert x.shape == part.x.shape == (x.shape[0], 62) and x.shape[0] > 300
    np.testing.assert_array_equal(x, part.x)
    # the profile columns as written out here, source MAC by source MAC, in the order connections end
    want = np.zeros((x.shape[0], 35))
    for m in np.unique(mac):
        rows = np.flatnonzero(mac == m)
        mean, var = np.zeros(17), np.zeros(17)
        for n, r in enumerate(rows, 1):
            a = max(2.0 / (SPAN + 1), 1.0 / n)
            d = np.where(np.isfinite(x[r, :17]), x[r, :17], 0.0) - mean
            mean = mean + a * d
            var = (1 - a) * (var + a * d * d)
            want[r] = [*mean, *np.sqrt(var), min(n, SPAN)]
    np.testing.assert_allclose(x[:, 27:], want, rtol=1e-12, atol=1e-9)
    assert np.unique(mac).size > 1 and x[:, -1].max() == SPAN    # several devices, one past the span


def test_gbdt_reads_the_view():
    from malsensor.models.zoo.gbdt import GBDT, GBDTConfig

    info = GBDT().view(GBDTConfig(view="conn_profile@1"))
    assert (info.ref, tuple(info.shape), tuple(info.columns)) == ("conn_profile@1", (62,), CONN_PROFILE_COLUMNS)
    assert CONN_PROFILE.context is ConnProfile   # what the trainer's capture reader builds the rows with
