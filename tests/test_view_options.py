"""Every built-in view finds its options back from an artifact's recorded view (``options_for``),
and an artifact of another shape is refused with a message naming the view's axes."""
from __future__ import annotations

import dataclasses

import pytest

from malsensor.daemon.artifact import ViewInfo
from malsensor.daemon.runtime.config import BUILTIN_VIEWS
from malsensor.daemon.views.base import get_view

# sizes other than the defaults (conn_series has none: lookback must be set), for the views
# whose shape has sizes a model chooses
SIZED = {
    "conn_series@1": {"lookback": 3},
    "pkt_seq@1": {"n_packets": 5},
    "proc_volume@1": {"steps": 4, "processes": 9},
    "host_volume@1": {"windows": 3, "connections": 7},
    "pt_tokens@1": {"seq_len": 12},
}


@pytest.mark.parametrize("ref", BUILTIN_VIEWS)
def test_options_come_back_from_the_recorded_view(ref):
    view = get_view(ref)
    for changes in ([SIZED[ref]] if ref in SIZED else [{}]):
        o = dataclasses.replace(view.options(), **changes)
        info = view.info(o)
        got = view.options_for(info)
        assert tuple(view.shape(got)) == tuple(info.shape) == tuple(view.shape(o))
        for key, value in changes.items():
            assert getattr(got, key) == value


@pytest.mark.parametrize("ref, message", [
    ("conn_series@1", "conn_series@1 has shape [lookback, 17], the artifact says [3, 16]"),
    ("pkt_seq@1", "pkt_seq@1 has shape [n_packets, 7], the artifact says [3, 16]"),
    ("proc_volume@1", "proc_volume@1 has shape [steps, processes, 45], the artifact says [3, 16]"),
    ("host_volume@1", "host_volume@1 has shape [windows, connections, 19], the artifact says [3, 16]"),
    ("pt_tokens@1", "pt_tokens@1 has shape [seq_len, 2], the artifact says [3, 16]"),
    ("conn@1", "conn@1 has shape [17], the artifact says [3, 16]"),
])
def test_another_shape_is_refused_naming_the_axes(ref, message):
    view = get_view(ref)
    info = ViewInfo(view.name, view.version, (3, 16), view.dtype, tuple(view.columns), view.feature_axis)
    with pytest.raises(ValueError) as e:
        view.options_for(info)
    assert str(e.value) == message


def test_pkt_seq_refuses_more_packets_than_it_can_record():
    view = get_view("pkt_seq@1")
    info = ViewInfo(view.name, view.version, (10_000, 7), view.dtype, tuple(view.columns), view.feature_axis)
    with pytest.raises(ValueError, match=r"pkt_seq@1 takes n_packets 1\.\.\d+, the artifact says 10000"):
        view.options_for(info)
