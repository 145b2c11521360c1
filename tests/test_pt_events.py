"""The ``trace`` formatter (one event per trace over several inference batches and outputs),
the in-flight bookkeeping that moves a sample to done/, and the trace-level verdict."""
from __future__ import annotations

import json

import numpy as np

from malsensor.daemon.outputs.eve import PredictionBatch
from malsensor.daemon.outputs.events import FORMATTERS
from malsensor.daemon.pt import pending
from malsensor.models.pt_eval import HIST_JSON, HIST_PNG, eval_stage, trace_ids, trace_report

LABELS = ["benign", "malicious"]


def _pb(seq: int, rid: int, windows: list[int], p_mal: list[float], threshold: float = 0.9) -> PredictionBatch:
    n = len(windows)
    probs = np.array([[1 - p, p] for p in p_mal], np.float32)
    keys = np.array([[seq, rid, w, 1000 + 10 * w] for w in windows], np.int64)
    cls = probs.argmax(1)
    alert = (cls == 1) & (probs[:, 1] >= threshold)
    topk = np.argsort(-probs, axis=1)
    return PredictionBatch("pt", "v1", "trace", LABELS, keys, np.zeros((n, 4, 2), np.float32), probs,
                           cls.astype(np.int64), topk.astype(np.int64), alert, np.zeros(n, np.int64),
                           entity="trace", host="h")


def test_one_event_per_trace_across_batches_and_outputs_and_done_once():
    fmt = FORMATTERS.get("trace")
    finished = []
    t = pending.register("sample-1", "malicious", "/spool/sample-1", finished.append)
    pending.add_route(t.seq, 77, 5, 2)
    pending.mark_dispatched(t.seq)
    first = _pb(t.seq, 77, [0, 1, 2], [0.1, 0.95, 0.2])
    assert fmt.eve_lines(first) == b"" and fmt.eve_lines(first, select=first.alert) == b""  # two outputs
    fmt.written(first)
    assert finished == []
    last = _pb(t.seq, 77, [3, 4], [0.97, 0.3])
    all_out = fmt.eve_lines(last)
    alerts_only = fmt.eve_lines(last, select=last.alert)
    assert all_out == alerts_only                     # the trace alerts, so the alerts-only output has it
    assert finished == []                             # done only once the writer has written the batch
    fmt.written(last)
    ev = json.loads(all_out)
    assert ev["event_type"] == "trace" and ev["host"] == "h"
    p = ev["prediction"]
    assert p["label"] == "malicious" and p["alert"] is True and p["trigger"] == "trace"
    assert abs(p["probability"] - 0.97) < 1e-6        # the best alerting window
    assert ev["trace"]["name"] == "sample-1" and ev["trace"]["windows"] == 5
    assert ev["trace"]["alerting_windows"] == 2
    assert [w["offset"] for w in ev["trace"]["top_windows"]] == [1030, 1010]   # top_windows = 2
    assert [f.name for f in finished] == ["sample-1"] and pending.get(t.seq) is None


def test_a_benign_trace_takes_the_mean_and_an_alerts_only_output_skips_it():
    """(Also: a batch no output formatted still completes its traces when written.)"""
    fmt = FORMATTERS.get("trace")
    t = pending.register("sample-2", "benign", "/spool/sample-2")
    pending.add_route(t.seq, 78, 2, 5)
    pb = _pb(t.seq, 78, [0, 1], [0.2, 0.4])
    assert fmt.eve_lines(pb, select=pb.alert) == b""
    ev = json.loads(fmt.eve_lines(pb))
    assert ev["prediction"]["label"] == "benign" and ev["prediction"]["alert"] is False
    assert abs(ev["prediction"]["probability"] - 0.7) < 1e-6   # mean of 0.8 and 0.6
    fmt.written(pb)
    # the sample is done only once the source has also finished dispatching it
    assert pending.get(t.seq) is not None
    pending.mark_dispatched(t.seq)
    assert pending.get(t.seq) is None
    t2 = pending.register("sample-3", "benign", "/spool/sample-3")
    pending.add_route(t2.seq, 78, 1, 5)
    pending.mark_dispatched(t2.seq)
    fmt.written(_pb(t2.seq, 78, [0], [0.1]))          # e.g. only non-eve outputs
    assert pending.get(t2.seq) is None


def test_trace_report_binary_is_barnums_verdict():
    # three traces: malicious with one window at 0.96 (flagged), malicious peaking at 0.94 (missed),
    # benign peaking at 0.97 (a false positive)
    trace = np.array([0, 0, 1, 1, 2, 2])
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.1, 0.96, 0.94, 0.5, 0.97, 0.01])
    probs = np.stack([1 - p, p], axis=1)
    rep = trace_report(trace, y, probs, LABELS, 0.95)
    assert rep["traces"] == 3 and rep["positive"] == "malicious"
    assert (rep["tp"], rep["fn"], rep["fp"], rep["tn"]) == (1, 1, 1, 0)
    assert rep["confusion"]["matrix"] == [[0, 1], [1, 1]]
    assert rep["per_class"]["malicious"]["precision"] == 0.5 and rep["per_class"]["malicious"]["recall"] == 0.5
    assert rep["one_vs_rest"]["malicious"]["f1"] == 0.5
    assert trace_ids(np.array([0, 0, 1, 1]), np.array([2, 3, 2, 2])).tolist() == [0, 1, 2, 2]


def assert_png(path) -> tuple[int, int]:
    """A valid PNG (signature, chunks and CRCs checked by Pillow's verify); its size."""
    from PIL import Image

    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR" and raw[-8:-4] == b"IEND"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.width > 100 and im.height > 100
        return im.size


def test_eval_stage_writes_histograms_whose_counts_are_the_windows(tmp_path):
    trace = np.array([0, 0, 1, 1, 2, 2])
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.1, 0.96, 0.94, 0.5, 0.97, 1.0])
    probs = np.stack([1 - p, p], axis=1).astype(np.float32)
    rep = eval_stage(tmp_path / "r", trace, y, probs, LABELS, 0.95, "t")
    assert (rep["tp"], rep["fn"], rep["fp"], rep["tn"]) == (1, 1, 1, 0)   # the same verdict as trace_report
    h = rep["histograms"]
    assert h == json.loads((tmp_path / "r" / HIST_JSON).read_text())
    assert list(h["classes"]) == ["malicious"] and len(h["bins"]) == 21 and h["windows"] == 6
    mal = h["classes"]["malicious"]
    # malicious windows at 0.1, 0.96, 0.94, 0.5; benign at 0.97 and 1.0 (in the last bin, edges included)
    assert mal["own"] == [0, 0, 1] + [0] * 7 + [1] + [0] * 7 + [1, 1]
    assert mal["rest"] == [0] * 19 + [2]
    assert_png(tmp_path / "r" / HIST_PNG)
    # several classes: one panel per class, own + rest = every window
    probs3 = np.random.default_rng(1).dirichlet(np.ones(3), 50).astype(np.float32)
    y3 = np.random.default_rng(2).integers(0, 3, 50)
    h3 = eval_stage(tmp_path / "m", np.zeros(50, np.int64), y3, probs3, ["a", "b", "c"], 0.5, "t")["histograms"]
    assert list(h3["classes"]) == ["a", "b", "c"]
    for j, c in enumerate("abc"):
        assert sum(h3["classes"][c]["own"]) == int((y3 == j).sum())
        assert sum(h3["classes"][c]["own"]) + sum(h3["classes"][c]["rest"]) == 50
    assert_png(tmp_path / "m" / HIST_PNG)


def test_spool_quarantines_bad_samples_with_their_reason_and_keeps_going(tmp_path):
    import gzip

    from pt_encoder import PtEncoder
    from malsensor.daemon.sources import SourceContext
    from malsensor.daemon.sources.pt_spool import PtSpoolConfig, PtSpoolSource

    enc = PtEncoder()
    enc.psb()
    enc.tip(0x401000)
    enc.tnt(True)
    trace, _ = enc.finish()

    def sample(name, info=b"x\nbenign\n", mapping=b"400000 /bin/x\n", trace_bytes=trace, gz_trace=False):
        d = tmp_path / "spool" / name
        d.mkdir(parents=True)
        (d / "info.txt").write_bytes(info)
        if mapping is not None:
            (d / "mapping.txt").write_bytes(mapping)
        (d / ("trace_0.gz" if gz_trace else "trace_0")).write_bytes(trace_bytes)
        return d

    sample("good")
    sample("good-gz", trace_bytes=gzip.compress(trace), gz_trace=True)
    sample("bad-gz", trace_bytes=b"\x1f\x8b\x08\x00garbage", gz_trace=True)
    sample("bad-info", info=b"\xff\xfe\n")
    sample("no-mapping", mapping=None)
    sample("bad-line", mapping=b"400000 /bin/x\n40z000 /bin/y\n")
    batches = []

    def dispatch(batch, beat):
        batches.append(batch)   # no model routes it: the sample is done once dispatched

    stray = pending.register("stray", None, "/elsewhere")   # another source's unfinished trace: not waited for
    src = PtSpoolSource(PtSpoolConfig(directory=str(tmp_path / "spool"), poll=0.05, once=True),
                        SourceContext(dispatch))
    src.start()
    src.join(60)
    pending.mark_dispatched(stray.seq)
    assert src.done.is_set() and src.error is None
    spool = tmp_path / "spool"
    assert sorted(p.name for p in (spool / "done").iterdir()) == ["good", "good-gz"]
    assert len(batches) == 2 and [b.kind.size for b in batches] == [2, 2]
    reasons = {p.name[:-len(".reason")]: p.read_text() for p in (spool / "quarantine").glob("*.reason")}
    assert set(reasons) == {"bad-gz", "bad-info", "no-mapping", "bad-line"}
    assert reasons["bad-gz"].startswith(f"{spool / 'bad-gz' / 'trace_0.gz'}: not a valid gzip file")
    assert reasons["bad-info"] == f"{spool / 'bad-info' / 'info.txt'}: not UTF-8 text (byte 0)\n"
    assert reasons["no-mapping"] == f"{spool / 'no-mapping'}: incomplete sample, missing mapping.txt[.gz]\n"
    assert reasons["bad-line"] == f"{spool / 'bad-line' / 'mapping.txt'}:2: not a hex address: '40z000'\n"
    st = src.stats()
    assert (st["pt_samples_taken"], st["pt_samples_done"], st["pt_samples_quarantined"]) == (6, 2, 4)
    assert st["pt_tokens"] == 4 and st["pt_samples_in_flight"] == 0
    assert not list((spool / ".processing").iterdir())
