"""``device_bag@1``: one row per device and window, the hashed set of its packets' sizes.

The bags are checked bit for bit against the hash written out here in plain Python (splitmix64
of ``direction << 24 | proto << 16 | size``), the windows against their rules (a device's own
window from its first connection, closed by a later connection, by the packet clock, by a full
table and at the end), and the daemon against the trainer: ``malsensord --replay`` serving a
forest fitted by ``malsensor-train`` on the trainer's rows gives one ``device`` event per
device window whose probabilities are the artifact's on the trainer's row for that window.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from conftest import require_data
from runtime_daemon import replay, trainer_part
from train_data import cli, write_spec

from malsensor.daemon.flows import layout as L
from malsensor.daemon.flows.seq import SEQ_COLUMNS
from malsensor.daemon.views.device_bag import DEVICE_BAG, DeviceBagOptions, DeviceBags

S = 1_000_000_000
M64 = (1 << 64) - 1


def splitmix(v: int) -> int:
    """daemon/splitmix.py's mix64(0, v), written out."""
    h = (v + 0x9E3779B97F4A7C15) & M64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def bit_of(direction: int, proto: int, size: int, bits: int) -> int:
    return splitmix((int(direction > 0) << 24) | (proto << 16) | size) & (bits - 1)


def records(macs, first_s, last_s, end: int = L.END_FIN) -> np.ndarray:
    r = np.zeros((len(macs), L.N_COLS), np.int64)
    r[:, L.SRC_MAC] = macs
    r[:, L.FIRST_TS] = np.round(np.asarray(first_s, float) * S)
    r[:, L.LAST_TS] = np.round(np.asarray(last_s, float) * S)
    r[:, L.END] = end
    return r


def sequences(packets: list[list[tuple[int, int, int]]], n: int) -> np.ndarray:
    """(direction, proto, size) per packet of each connection -> the tracker's (rows, n, 7)."""
    c = {name: i for i, name in enumerate(SEQ_COLUMNS)}
    out = np.zeros((len(packets), n, len(SEQ_COLUMNS)), np.float32)
    for i, conn in enumerate(packets):
        for j, (d, p, size) in enumerate(conn[:n]):
            out[i, j, [c["direction"], c["proto"], c["size"], c["mask"]]] = (d, p, size, 1)
    return out


def test_bag_bits_are_the_hash_of_each_packet():
    o = DeviceBagOptions(bag_packets=3, bag_bits=256, bag_window=60.0, bag_late=0.0)
    conns = [[(1, 6, 60), (-1, 6, 60), (1, 6, 52)], [(1, 17, 76), (-1, 17, 956), (1, 17, 1500), (1, 17, 99)]]
    b = DeviceBags(o)
    keys, x = b.feed(records([0xA, 0xA], [1.0, 2.0], [1.5, 3.0]), sequences(conns, 4))
    assert keys.shape[0] == 0   # the window is open until the end
    keys, x = b.finish()
    assert keys.tolist() == [(0xA, 1 * S, 61 * S, 1 * S, 3 * S, 2)]
    # the 4th packet of the second connection is past bag_packets = 3: not in the bag
    want = {bit_of(d, p, n, 256) for conn in conns for d, p, n in conn[:3]}
    assert bit_of(1, 17, 99, 256) not in want   # (else the check below could not see it)
    assert set(np.flatnonzero(x[0]).tolist()) == want
    assert x.dtype == np.float32 and set(np.unique(x).tolist()) == {0.0, 1.0}


def test_windows_are_the_devices_own():
    o = DeviceBagOptions(bag_packets=1, bag_bits=64, bag_window=10.0, bag_late=2.0)
    b = DeviceBags(o)
    one = [[(1, 17, 100)]]
    # device 1 opens at 5 s (not at a multiple of the window); device 2 at 7 s
    keys, _ = b.feed(records([1, 2], [5.0, 7.0], [6.0, 8.0]), sequences(one * 2, 1))
    assert keys.shape[0] == 0 and b.pending() == 2
    # a long connection of device 1 that started before its window goes into it; its start at
    # 14.9 s is inside [5, 15)
    keys, _ = b.feed(records([1, 1], [3.0, 14.9], [15.5, 16.0]), sequences(one * 2, 1))
    assert keys.shape[0] == 0
    # device 1 at 15 s: its window [5, 15) closes (a later connection) and the next opens at 15 s
    keys, _ = b.feed(records([1], [15.0], [16.5]), sequences(one, 1))
    assert keys.tolist() == [(1, 5 * S, 15 * S, 3 * S, 16 * S, 3)]
    # the packet clock reaches 19 s = device 2's end (17 s) + bag_late (2 s): device 2 went quiet
    keys, _ = b.feed(records([3], [18.0], [18.999]), sequences(one, 1))
    assert keys.shape[0] == 0
    keys, _ = b.feed(records([3], [18.5], [19.0]), sequences(one, 1))
    assert keys.tolist() == [(2, 7 * S, 17 * S, 7 * S, 8 * S, 1)]
    # the end closes the rest, by window start then MAC
    keys, _ = b.finish()
    assert keys.tolist() == [(1, 15 * S, 25 * S, 15 * S, 16500000000, 1), (3, 18 * S, 28 * S, 18 * S, 19 * S, 2)]
    assert b.pending() == 0 and b.windows == 4 and b.forced == 0


def test_snapshots_are_not_connections_and_a_full_table_closes_every_bag():
    o = DeviceBagOptions(bag_packets=1, bag_bits=64, bag_window=100.0, bag_late=0.0)
    b = DeviceBags(o, max_devices=2)
    one = [[(1, 6, 60)]]
    keys, _ = b.feed(records([1], [1.0], [2.0], end=L.END_SNAPSHOT), sequences(one, 1))
    assert keys.shape[0] == 0 and b.pending() == 0
    keys, _ = b.feed(records([1, 2, 3, 2], [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0]), sequences(one * 4, 1))
    # the third MAC finds the table full: both open windows close as they are, then 3 and 2 open again
    assert keys.tolist() == [(1, 1 * S, 101 * S, 1 * S, 2 * S, 1), (2, 2 * S, 102 * S, 2 * S, 3 * S, 1)]
    assert b.forced == 2 and b.pending() == 2
    keys, _ = b.finish()
    assert keys.tolist() == [(3, 3 * S, 103 * S, 3 * S, 4 * S, 1), (2, 4 * S, 104 * S, 4 * S, 5 * S, 1)]


def test_the_table_of_devices_takes_what_the_docs_say():
    """docs/devices.md: 5.5 MB at the default 1024 bits (32,768 slots for 16,384 devices)."""
    b = DeviceBags(DeviceBagOptions())
    arrays = (b.slot_mac, b.slot_used, b.w_start, b.w_first, b.w_last, b.w_count, b.bag)
    assert b.slot_mac.shape == (32768,) and sum(a.nbytes for a in arrays) == 5_537_792


def test_too_few_recorded_packets_is_an_error():
    b = DeviceBags(DeviceBagOptions(bag_packets=8, bag_bits=64))
    with pytest.raises(RuntimeError, match="keep 8 packets"):
        b.feed(records([1], [1.0], [2.0]), sequences([[(1, 6, 60)]], 4))


def test_view_shape_options_and_config_errors(tmp_path):
    info = DEVICE_BAG.info(DeviceBagOptions(bag_bits=256, bag_packets=32))
    assert info.shape == (256,) and info.columns[0] == "bag_0" and info.columns[-1] == "bag_255"
    assert info.options.bag_packets == 32
    assert DEVICE_BAG.seq_packets(info.options) == 32
    from malsensor.daemon.artifact import ViewInfo

    assert DEVICE_BAG.options_for(ViewInfo("device_bag", 1, (512,))).bag_bits == 512
    with pytest.raises(ValueError, match="power of two"):
        DEVICE_BAG.options_for(ViewInfo("device_bag", 1, (500,)))
    from malsensor.daemon.runtime.config import ConfigError, load_config

    cfg = tmp_path / "m.toml"
    cfg.write_text('[[model]]\nname = "iot"\nview = "device_bag@1"\nbag_bits = 1000\n')
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert f"{cfg}:4: model[0].bag_bits: 1000 is not a power of two" in str(e.value)


DEVICES = ("Aria", "D-LinkCam", "EdimaxPlug1101W", "HueBridge")
BAG = {"bag_packets": 32, "bag_bits": 256, "bag_window": 600.0, "bag_late": 60.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    iot = require_data("iot_sentinel")
    tmp = tmp_path_factory.mktemp("bags")
    data = tmp / "data"
    for dev in DEVICES:
        (data / dev).mkdir(parents=True)
        for c in sorted((iot / dev).glob("*.pcap"))[:-1]:
            (data / dev / c.name).symlink_to(c)
    spec = write_spec(tmp, "forest", {"view": "device_bag@1", "n_estimators": 40, "max_depth": 0, **BAG}, None)
    out = tmp / "models"
    proc = cli("fit", "--model", spec, "--data", data, "--macs", iot / "device_macs.csv", "--out", out,
               "--name", "bag", "--reports", tmp / "r")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, iot, tmp


def test_replay_gives_the_trainers_rows_and_verdicts(tmp_path, trained):
    models_dir, iot, _ = trained
    # two held-out captures of two devices, one after the other in one file
    caps = [sorted((iot / d).glob("*.pcap"))[-1] for d in ("Aria", "EdimaxPlug1101W")]
    merged = tmp_path / "two.pcap"
    import subprocess

    subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", merged, *caps], check=True)
    keys = "\n".join(f"{k} = {v}" for k, v in BAG.items())
    done = replay(tmp_path, merged, f'[[model]]\nname = "bag"\nmodels_dir = "{models_dir}"\n'
                                    f'view = "device_bag@1"\n{keys}\n', timeout=900)
    events = done.events
    assert {e["event_type"] for e in events} == {"device"}
    stats = json.loads((done.logs / "stats.jsonl").read_text().splitlines()[-1])
    assert stats["models"]["bag"]["view"] == {"windows": len(events), "closed_early": 0}
    assert stats["models"]["bag"]["pending"] == 0

    from malsensor.daemon.artifact import load_artifact

    part = trainer_part(DEVICE_BAG.info(DeviceBagOptions(**BAG)), merged)
    assert len(events) == part.n > 0
    art = load_artifact(models_dir / "bag")
    assert art.view.ref == "device_bag@1" and art.view.shape == (256,)
    probs = np.asarray(art.predict_proba(np.asarray(part.x, np.float32)))
    labels = list(art.labels)

    def start(e):
        return datetime.strptime(e["device"]["window_start"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()

    by_key = {(e["device"]["mac"], round(start(e) * 1e6)): e for e in events}
    assert len(by_key) == part.n
    for i in range(part.n):
        e = by_key[(part.src_mac[i], round(part.ts[i] * 1e6))]
        p = e["prediction"]
        cid = int(np.argmax(probs[i]))
        assert p["label"] == labels[cid] and p["trigger"] == "window"
        assert p["probability"] == pytest.approx(float(probs[i, cid]), abs=1e-5)
    # each held-out device is reported, and named right
    macs = dict(line.split(",")[:2] for line in (iot / "device_macs.csv").read_text().splitlines()[1:])
    for dev in ("Aria", "EdimaxPlug1101W"):
        mine = [e for e in events if e["device"]["mac"] == macs[dev].strip()]
        assert len(mine) == 1 and mine[0]["prediction"]["label"] == dev, (dev, mine)


def test_the_daemon_refuses_bag_keys_the_model_was_not_trained_with(trained):
    models_dir, _, tmp = trained
    from malsensor.daemon.artifact import ArtifactError
    from malsensor.daemon.runtime import config as C
    from malsensor.daemon.runtime.registry import load_model

    meta = json.loads((models_dir / "bag" / "current" / "meta.json").read_text())
    assert meta["view"]["options"] == BAG
    keys = "\n".join(f"{k} = {v}" for k, v in {**BAG, "bag_packets": 16}.items())
    cfg = C.parse_config(f'[[model]]\nname = "bag"\nmodels_dir = "{models_dir}"\nview = "device_bag@1"\n{keys}\n',
                         "m.toml", str(tmp))
    with pytest.raises(ArtifactError, match="trained with bag_packets = 32 but this \\[\\[model\\]\\] table gives "
                                            "bag_packets = 16"):
        load_model(cfg.models[0], (1, 16))
    keys = "\n".join(f"{k} = {v}" for k, v in BAG.items())
    cfg = C.parse_config(f'[[model]]\nname = "bag"\nmodels_dir = "{models_dir}"\nview = "device_bag@1"\n{keys}\n',
                         "m.toml", str(tmp))
    assert load_model(cfg.models[0], (1, 16)).artifact.view.shape == (256,)


def test_evaluate_builds_the_rows_the_model_was_trained_on(trained, tmp_path):
    """``malsensor-train evaluate`` reads a device_bag@1 model's data with the bag keys of its
    meta.json (32 packets, 256 bits here), not the view's defaults (64, 1024)."""
    models_dir, iot, _ = trained
    from malsensor.daemon.artifact import load_artifact
    from malsensor.models.use import data_view

    view = data_view(load_artifact(models_dir / "bag"))
    assert view.options == DeviceBagOptions(**BAG)
    held = tmp_path / "held" / "Aria"
    held.mkdir(parents=True)
    (held / "a.pcap").symlink_to(sorted((iot / "Aria").glob("*.pcap"))[-1])
    proc = cli("evaluate", models_dir / "bag" / "current", held, "--macs", iot / "device_macs.csv", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    # one labelled window (Aria's), named right: the same verdict the replay test checks
    assert got["n"] == 1 and got["accuracy"] == 1.0, got
