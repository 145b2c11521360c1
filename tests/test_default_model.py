"""The shipped default model (contrib/models/default) and the data recipe behind it
(contrib/models/default_data.py, train-default.sh; docs/training.md "The default model")."""
from __future__ import annotations

import csv
import json
import sys
import tomllib

import numpy as np
import pytest

from conftest import PCAPS, REPO, require_data

sys.path.insert(0, str(REPO / "contrib" / "models"))
import default_data  # noqa: E402

DEFAULT = REPO / "contrib" / "models" / "default"


def _unsw(**over) -> dict[str, str]:
    row = dict(dur="0.5", proto="tcp", spkts="10", dpkts="8", sbytes="1140", dbytes="4112", sttl="62",
               dttl="252", sinpkt="50.5", dinpkt="60", tcprtt="0.15", synack="0.1", ackdat="0.05")
    row.update(over)
    return row


def test_unsw_rows_become_malsensor_features():
    """Frame bytes minus 14 per packet, load from the converted bytes over dur, IAT in seconds,
    tcp_rtt only with both handshake halves (docs/features.md)."""
    x = default_data.unsw_row_to_conn(_unsw())
    assert x == [0.5, 6.0, 1000.0, 4000.0, 62.0, 252.0, 16000.0, 64000.0, 10.0, 8.0, 100.0, 500.0,
                 0.0505, 0.06, 0.15000000000000002, 0.1, 0.05]
    x = default_data.unsw_row_to_conn(_unsw(ackdat="0", tcprtt="0.1", dur="0", spkts="1", dpkts="0",
                                            sbytes="60", dbytes="0", sinpkt="0", dinpkt="0"))
    assert x == [0.0, 6.0, 46.0, 0.0, 62.0, 252.0, 0.0, 0.0, 1.0, 0.0, 46.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.0]
    assert default_data.unsw_row_to_conn(_unsw(proto="no-such-protocol")) is None


def test_unsw_first_row_of_the_shared_csv():
    path = require_data("unsw_nb15/UNSW_NB15_82k.csv")
    with open(path, encoding="utf-8-sig", newline="") as f:
        first = next(csv.DictReader(f))
    # 0.000011 s, udp, 2 packets of 496 frame bytes in all, TTL 254, sinpkt 0.011 ms
    assert default_data.unsw_row_to_conn(first) == [
        1.1e-05, 17.0, 468.0, 0.0, 254.0, 0.0, 468 * 8 / 1.1e-05, 0.0, 2.0, 0.0, 234.0, 0.0, 1.1e-05, 0.0,
        0.0, 0.0, 0.0]


def test_layout_groups_and_labels(tmp_path):
    require_data("iot_sentinel")
    require_data("unsw_nb15/UNSW_NB15_82k.csv")
    default_data.prepare(REPO.parent / "shared" / "data", tmp_path)
    mal = sorted(p.name for p in (tmp_path / "malicious").iterdir())
    ben = sorted(p.name for p in (tmp_path / "benign").iterdir())
    assert [n for n in mal if not n.startswith("unsw_")] == sorted(default_data.MALICIOUS_PCAPS)
    assert [n for n in ben if not n.startswith(("unsw_", "iot__"))] == sorted(default_data.BENIGN_PCAPS)
    assert sum(n.startswith("iot__") for n in ben) == 414
    rows = {lab: sum(sum(1 for _ in open(tmp_path / lab / n)) - 1 for n in names if n.startswith("unsw_"))
            for lab, names in (("benign", ben), ("malicious", mal))}
    assert rows == {"benign": 29600, "malicious": 36270}


def test_shipped_model_meta_and_threshold_agree_with_the_config():
    """The operating point the model was chosen for is the one etc/malsensor.toml serves."""
    meta = json.loads((DEFAULT / "current" / "meta.json").read_text())
    cfg = tomllib.loads((REPO / "etc" / "malsensor.toml").read_text())
    model = next(m for m in cfg["model"] if m["name"] == "default")
    assert model["alert_threshold"] == 0.8
    assert "P(malicious) >= 0.8" in meta["description"]
    assert meta["data"]["split"]["mode"] == "group"
    assert meta["view"]["semantics"] == "malsensor"
    assert meta["data"]["labels"] == {"benign": 42122, "malicious": 38999}
    assert json.loads((DEFAULT / "current" / "labels.json").read_text()) == ["benign", "malicious"]


@pytest.mark.parametrize("capture, connections, alerts", [
    ("ndpi_1kxun.pcap", 121, 0),                  # benign, on the test side of the split
    ("stratosphere_cc_capture1.pcap", 299, 298),  # malicious, trained on
    ("synscan.pcapng", 1994, 0),                  # malicious, on the validation side: not detected
])
def test_shipped_model_alerts_at_its_threshold(capture, connections, alerts):
    """Alert counts at P(malicious) >= 0.8 (README "Default model"), through the trainer's reader
    (the sensor's own extractor) and the artifact loader the daemon uses."""
    from malsensor.daemon.artifact import load_artifact
    from malsensor.daemon.views.conn import CONN
    from malsensor.models.data.captures import read_capture_file
    from malsensor.models.data.table import DataStats

    art = load_artifact(DEFAULT)
    part = read_capture_file(require_data(PCAPS / capture), CONN.info(), DataStats())
    p = np.asarray(art.predict_proba(part.x.astype(np.float32)))[:, art.labels.index("malicious")]
    assert (part.n, int((p >= 0.8).sum())) == (connections, alerts)
