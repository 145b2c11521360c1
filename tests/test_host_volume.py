"""``host_volume@1``: a local host's connections in windows, the same volumes in the trainer and
in ``malsensord --replay`` (one class builds both), and the per-host events they give."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest

from conftest import require_data
from runtime_daemon import replay, trainer_part
from train_data import cli, write_spec

from malsensor.daemon.flows import layout as L
from malsensor.daemon.flows.config import TrackerConfig
from malsensor.daemon.pipeline import extract_file
from malsensor.daemon.views.host_volume import (ORIGINATOR, PRESENT, W, HostVolumeBuilder, HostVolumeOptions,
                                               parse_nets)

# small windows: the public captures last seconds to minutes
OPTS = dict(windows=4, connections=16, window_s=2.0, late_s=5.0, window_stride=1, local_nets=())


def _batches(capture: Path) -> list:
    return list(extract_file(capture, tracking=TrackerConfig()))


def _build(batches, o: HostVolumeOptions, chunk: int = 0):
    b = HostVolumeBuilder(o)
    got = []
    for cb in batches:
        if chunk:
            for i in range(0, cb.n, chunk):
                got += b.feed(cb.records[i:i + chunk], cb.features[i:i + chunk])
        else:
            got += b.feed(cb.records, cb.features)
    got += b.finish()
    keys = np.concatenate([k for k, _ in got])
    x = np.concatenate([v for _, v in got])
    return keys, x, b


def test_batch_boundaries_do_not_change_the_volumes():
    """The daemon cuts connections into other batches than the trainer: same volumes either way."""
    batches = _batches(require_data("pcap/stratosphere_scanning_host.pcap"))
    o = HostVolumeOptions(**OPTS)
    k1, x1, _ = _build(batches, o)
    k7, x7, _ = _build(batches, o, chunk=7)
    k1r, x1r, _ = _build(batches, o, chunk=1)
    assert x1.shape[0] > 100 and x1.shape[1:] == (4, 16, W)
    for k, x in ((k7, x7), (k1r, x1r)):
        assert np.array_equal(k, k1) and np.array_equal(x, x1)


def test_every_local_end_of_every_connection_lands_in_one_window():
    """Volumes that do not overlap and rows enough: each (connection, local end) fills exactly one
    cell, in its host's volume, in window order, most bytes first within a window."""
    capture = require_data("pcap/stratosphere_scanning_host.pcap")
    batches = _batches(capture)
    rec = np.concatenate([cb.records for cb in batches])
    rec = rec[(rec[:, L.END] & 0xFF) != L.END_SNAPSHOT]
    nets = ("192.168.0.0/16", "10.0.0.0/8")
    o = HostVolumeOptions(windows=4, connections=4096, window_s=2.0, late_s=5.0, window_stride=0, local_nets=nets)
    keys, x, b = _build(batches, o)

    def local(hi, lo):
        a = (int(hi) << 64 | int(lo) & 0xFFFFFFFFFFFFFFFF) & ((1 << 128) - 1)
        ip = ipaddress.IPv6Address(a).ipv4_mapped or ipaddress.IPv6Address(a)
        return any(ip in ipaddress.ip_network(n) for n in nets), str(ip)

    want: dict[str, int] = {}
    for r in rec:
        for hi, lo in ((r[L.SRC_HI], r[L.SRC_LO]), (r[L.DST_HI], r[L.DST_LO])):
            ok, text = local(hi, lo)
            if ok:
                want[text] = want.get(text, 0) + 1
    got: dict[str, int] = {}
    for k, v in zip(keys, x):
        got[str(k["host"])] = got.get(str(k["host"]), 0) + int(v[..., PRESENT].sum())
        assert int(k["connections"]) == int(v[..., PRESENT].sum())  # nothing cut at H = 4096
        assert int(k["end_ns"]) - int(k["start_ns"]) == 4 * 2_000_000_000
        for step in v:
            n = int(step[:, PRESENT].sum())
            assert (step[:n, PRESENT] == 1).all() and not step[n:].any()  # rows packed, then zeros
            total = step[:n, 2] + step[:n, 3]
            assert (np.diff(total) <= 0).all()  # most bytes first
    assert got == want and sum(want.values()) == 360 and want["192.168.2.16"] == 339
    assert set(np.unique(x[..., ORIGINATOR][x[..., PRESENT] > 0])) == {0.0, 1.0}


def test_the_cap_keeps_the_biggest_connections():
    batches = _batches(require_data("pcap/ndpi_1kxun.pcap"))
    big = HostVolumeOptions(**{**OPTS, "connections": 512})
    small = HostVolumeOptions(**{**OPTS, "connections": 2})
    kb, xb, _ = _build(batches, big)
    ks, xs, bs = _build(batches, small)
    assert np.array_equal(kb[["host", "start_ns", "connections"]], ks[["host", "start_ns", "connections"]])
    assert np.array_equal(xs, xb[:, :, :2])  # the first two rows of every window
    assert bs.cut > 0


def test_local_nets_parse_to_the_decoder_layout():
    (hi, lo, mh, ml), = parse_nets(["192.168.0.0/16"])
    assert (hi, lo) == (0, (0xFFFF << 32) | (192 << 24) | (168 << 16))
    assert (mh, ml) == (0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFF0000)
    with pytest.raises(ValueError, match="local_nets: '300.1.0.0/16' is not a network"):
        parse_nets(["300.1.0.0/16"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A small cnn3d on host volumes: hosts of malicious captures vs benign ones (folder labels)."""
    tmp = tmp_path_factory.mktemp("hostvol")
    data = tmp / "data"
    for label, names in (("benign", ("http_espn.pcapng", "ndpi_443_firefox.pcap", "ndpi_1kxun.pcap")),
                         ("malicious", ("stratosphere_scanning_host.pcap", "synscan.pcapng"))):
        (data / label).mkdir(parents=True)
        for n in names:
            (data / label / n).symlink_to(require_data(f"pcap/{n}"))
    model = {"view": "host_volume@1", "steps": OPTS["windows"], "processes": OPTS["connections"],
             "window_s": OPTS["window_s"], "late_s": OPTS["late_s"], "window_stride": OPTS["window_stride"],
             "local_nets": list(OPTS["local_nets"]), "filters": [4, 8], "dense": [16], "dropout": 0.1,
             "norm": "batch"}
    spec = write_spec(tmp, "cnn3d", model, {"epochs": 2, "batch_size": 32, "seed": 0})
    out = tmp / "models"
    proc = cli("fit", "--model", spec, "--data", data, "--label-from", "folder", "--split", "random",
               "--out", out, "--name", "hv", "--reports", tmp / "r")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, data


def test_replay_gives_the_trainers_volumes_and_host_events(tmp_path, trained):
    models_dir, _ = trained
    capture = require_data("pcap/synscan.pcapng")
    events = replay(tmp_path, capture,
                    f'[[model]]\nname = "hv"\nmodels_dir = "{models_dir}"\nview = "host_volume@1"\n'
                    f'windows = {OPTS["windows"]}\nconnections = {OPTS["connections"]}\nwindow_s = {OPTS["window_s"]}\n'
                    f'late_s = {OPTS["late_s"]}\nwindow_stride = {OPTS["window_stride"]}\nlocal_nets = []\n',
                    batch_sizes=(1, 16)).events

    from malsensor.daemon.artifact import load_artifact
    from malsensor.daemon.views.host_volume import HOST_VOLUME

    part = trainer_part(HOST_VOLUME.info(HostVolumeOptions(**OPTS)), capture)
    n = part.n
    assert n == 24 and len(events) == n  # 2 hosts (both ends are local with local_nets = [])
    art = load_artifact(models_dir / "hv")
    assert any("batch_stats" in p for p in art.param_paths)  # the running statistics travel as data
    probs = art.predict_proba(part.x.astype(np.float32))
    by_key = {(e["net"]["host"], e["net"]["end_ns"]): e for e in events}
    assert len(by_key) == n
    for i in range(n):
        e = by_key[(part.src_ip[i], int(round(part.ts[i] * 1e9)))]
        assert e["event_type"] == "host" and e["prediction"]["trigger"] == "window"
        cid = int(np.argmax(probs[i]))
        assert e["prediction"]["class_id"] == cid
        assert e["prediction"]["probability"] == pytest.approx(float(probs[i, cid]), abs=1e-5)
        net = e["net"]
        assert net["windows"] == OPTS["windows"] and net["connections"] >= int(part.x[i, ..., PRESENT].sum()) > 0
        top = net["top"]
        assert top and [t["bytes"] for t in top] == sorted((t["bytes"] for t in top), reverse=True)
        assert {"peer", "dest_port", "proto", "originator", "packets"} <= set(top[0])
