"""``malsensord --replay`` serving a gbdt model on ``pkt_seq@1``, ``conn_ctx@1`` or ``conn_profile@1`` with
per-device pooling (``mean`` and ``logmean``).

The model is trained by ``malsensor-train`` on IoT Sentinel captures of three devices
(labels by source MAC), published, and served by the daemon on a capture it did not see.
Every connection gets one prediction equal to the artifact's ``predict_proba`` on the rows
the trainer's reader builds from the same capture (no train/serve skew), and each source MAC
gets one ``device`` event whose probabilities pool its connections' (one window).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import require_data
from runtime_daemon import replay, trainer_part
from train_data import cli, write_spec

DEVICES = ("Aria", "D-LinkCam", "EdimaxPlug1101W")
N_PACKETS = 8
WINDOW_S = 86400.0
# view -> (spec keys, [[model]] keys, device_pool)
VIEWS = {
    "pkt_seq@1": ({"view": "pkt_seq@1", "n_packets": N_PACKETS}, f'view = "pkt_seq@1"\nn_packets = {N_PACKETS}\n',
                  "mean"),
    "conn_ctx@1": ({"view": "conn_ctx@1"}, 'view = "conn_ctx@1"\n', "logmean"),
    "conn_profile@1": ({"view": "conn_profile@1"}, 'view = "conn_profile@1"\n', "mean"),
}


def pooled(probs: np.ndarray, pool: str) -> np.ndarray:
    """The pools as docs/devices.md defines them, written out here (not the daemon's code)."""
    if pool == "mean":
        return probs.mean(axis=0)
    z = np.exp(np.log(np.maximum(probs.astype(np.float64), 1e-6)).mean(axis=0))
    return z / z.sum()


@pytest.fixture(scope="module", params=sorted(VIEWS))
def trained(request, tmp_path_factory) -> tuple[Path, Path, Path, str]:
    iot = require_data("iot_sentinel")
    view_ref = request.param
    tmp = tmp_path_factory.mktemp("devices")
    data = tmp / "data"
    for dev in DEVICES:
        (data / dev).mkdir(parents=True)
        caps = sorted((iot / dev).glob("*.pcap"))
        for c in caps[:-1]:
            (data / dev / c.name).symlink_to(c)
    held_out = sorted((iot / "Aria").glob("*.pcap"))[-1]
    spec = write_spec(tmp, "gbdt", {**VIEWS[view_ref][0], "n_estimators": 20, "max_depth": 4,
                                    "early_stopping_rounds": 0},
                      None)
    out = tmp / "models"
    proc = cli("fit", "--model", spec, "--data", data, "--macs", iot / "device_macs.csv", "--split", "random",
               "--out", out, "--name", "dev", "--reports", tmp / "r")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, held_out, iot, view_ref


def test_replay_model_and_device_events(tmp_path, trained):
    models_dir, capture, iot, view_ref = trained
    model_keys, pool = VIEWS[view_ref][1:]
    events = replay(tmp_path, capture,
                    f'[[model]]\nname = "dev"\nmodels_dir = "{models_dir}"\n{model_keys}'
                    f'device_window = {WINDOW_S}\ndevice_pool = "{pool}"\n',
                    timeout=900).events  # start-up compiles the kernels and the model: minutes on a loaded VM
    conns = [e for e in events if e["event_type"] != "device"]
    devices = [e for e in events if e["event_type"] == "device"]

    from malsensor.daemon.artifact import load_artifact
    from malsensor.daemon.views.base import get_view
    from malsensor.daemon.views.pkt_seq import PKT_SEQ, PktSeqOptions

    view = PKT_SEQ.info(PktSeqOptions(n_packets=N_PACKETS)) if view_ref == "pkt_seq@1" else get_view(view_ref).info()
    part = trainer_part(view, capture)
    n = len(part.src_ip)
    assert n > 0 and len(conns) == n
    art = load_artifact(models_dir / "dev")
    x = np.asarray(part.x, dtype=np.float32)
    probs = np.asarray(art.predict_proba(x))
    labels = list(art.labels)
    assert set(labels) == set(DEVICES)
    by_conn = {}
    for e in conns:
        by_conn.setdefault((e["src_ip"], e["dest_ip"], e["flow"]["start"]), []).append(e)
    from datetime import datetime

    def start(e):
        return round(datetime.strptime(e["flow"]["start"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1e6)

    keyed = {(e["src_ip"], e["dest_ip"], start(e)): e for e in conns}
    assert len(keyed) == n
    for i in range(n):
        e = keyed[(part.src_ip[i], part.dest_ip[i], round(part.ts[i] * 1e6))]
        p = e["prediction"]
        cid = int(np.argmax(probs[i]))
        assert p["class_id"] == cid and p["label"] == labels[cid]
        assert p["probability"] == pytest.approx(float(probs[i, cid]), abs=1e-5)

    # one device event per source MAC and window: its connections' probabilities pooled
    macs = np.array(part.src_mac)
    window = np.floor(np.asarray(part.ts) / WINDOW_S).astype(np.int64)
    want = {}
    for m in sorted(set(macs.tolist())):
        for w in sorted(set(window[macs == m].tolist())):
            sel = (macs == m) & (window == w)
            want[(m, w)] = (int(sel.sum()), pooled(probs[sel], pool))
    assert len(devices) == len(want)
    for d in devices:
        dev = d["device"]
        w = int(datetime.strptime(dev["window_start"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() // WINDOW_S)
        count, mean = want[(dev["mac"], w)]
        assert dev["connections"] == count
        p = d["prediction"]
        cid = int(np.argmax(mean))
        assert p["label"] == labels[cid] and p["trigger"] == f"window:{pool}"
        assert p["probability"] == pytest.approx(float(mean[cid]), abs=1e-5)
    # the held-out capture's device: Aria's MAC is reported
    aria = next(line.split(",")[1].strip() for line in (iot / "device_macs.csv").read_text().splitlines()
                if line.startswith("Aria,"))
    assert aria in {d["device"]["mac"] for d in devices}


def test_device_aggregator_windows():
    """Windows close when a later one of the same MAC starts, when the newest connection is a
    whole window past them, and at flush; min_connections drops small windows."""
    from malsensor.daemon.flows import layout as L
    from malsensor.daemon.outputs.eve import PredictionBatch
    from malsensor.daemon.runtime.devices import DeviceAggregator, pool_probs

    def batch(macs, starts_s, probs):
        rec = np.zeros((len(macs), L.N_COLS), dtype=np.int64)
        rec[:, L.SRC_MAC] = macs
        rec[:, L.FIRST_TS] = np.asarray(starts_s) * 10**9
        rec[:, L.LAST_TS] = rec[:, L.FIRST_TS] + 10**9
        p = np.asarray(probs, dtype=np.float32)
        return PredictionBatch("m", "1", "end", ["a", "b"], rec, np.zeros((len(macs), 17)), p,
                               p.argmax(1), np.argsort(-p, 1)[:, :2], np.zeros(len(macs), bool),
                               np.zeros(len(macs), np.int64))

    got = []
    agg = DeviceAggregator(10.0, "mean", got.append, ("a",), 0.5, min_connections=2)
    agg(batch([1, 1, 2], [100, 101, 102], [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]))
    assert [g.entity for g in got] == ["connection"]
    agg(batch([1, 2], [112, 103], [[0.1, 0.9], [0.4, 0.6]]))  # MAC 1's window [100, 110) closes
    dev = [g for g in got if g.entity == "device"]
    assert len(dev) == 1 and dev[0].keys["mac"].tolist() == [1] and dev[0].keys["connections"].tolist() == [2]
    np.testing.assert_allclose(dev[0].probs[0], [0.7, 0.3], rtol=1e-6)
    assert dev[0].alert.tolist() == [False]  # "a" is benign
    agg(batch([3], [125], [[0.5, 0.5]]))  # MAC 2's window [100, 110) is a whole window behind: closes
    dev = [g for g in got if g.entity == "device"]
    assert len(dev) == 2 and dev[1].keys["mac"].tolist() == [2] and dev[1].alert.tolist() == [True]
    np.testing.assert_allclose(dev[1].probs[0], [0.3, 0.7], rtol=1e-6)
    last = agg.flush()  # MAC 1's second window and MAC 3's have one connection each: not reported
    assert last is None
    np.testing.assert_allclose(pool_probs(np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]), "vote"), [2 / 3, 1 / 3])
    lm = pool_probs(np.array([[0.8, 0.2], [0.5, 0.5]]), "logmean")
    np.testing.assert_allclose(lm, np.array([0.4 ** 0.5, 0.1 ** 0.5]) / (0.4 ** 0.5 + 0.1 ** 0.5))


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_device_keys_need_a_window(view):
    """device_pool / device_min_connections without device_window is a config error naming the
    file, line and key; with a window every device view accepts them."""
    from malsensor.daemon.runtime import config as C

    head = f'[[model]]\nname = "m"\nmodels_dir = "/m"\n{VIEWS[view][1]}'
    with pytest.raises(C.ConfigError) as ei:
        C.parse_config(head + 'device_pool = "logmean"\n', "t.toml", "/base")
    assert [str(p) for p in ei.value.problems] == [
        "t.toml:1: model[0].device_window: device_pool and device_min_connections need device_window > 0"]
    cfg = C.parse_config(head + 'device_window = 60.0\ndevice_pool = "logmean"\ndevice_min_connections = 3\n',
                         "t.toml", "/base")
    o = cfg.models[0].options
    assert (o.device_window, o.device_pool, o.device_min_connections) == (60.0, "logmean", 3)
