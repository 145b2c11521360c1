"""Cost of the Community ID in EVE events and extract rows, per connection.

Connections of every shared capture (../shared/data/pcap), repeated to N rows, formatted as
EVE events (eve_lines, with features, 3 classes, top 2) and as extract rows (jsonl_bytes), with
the Community ID and, where this tree has it, the hash alone (community_ids). The reference:
the ``communityid`` package (the spec authors' Python implementation) on the same tuples.

    .venv/bin/python bench/bench_community_id.py [--rows 100000] [--repeat 5]

Run it on the commit before the Community ID too (``git archive`` the tree, put it on
PYTHONPATH as ``malsensor``): the difference of the µs/event figures is the ID's cost.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from malsensor.daemon.flows import layout as L
from malsensor.daemon.outputs import eve
from malsensor.daemon.outputs.rows import format_ip, jsonl_bytes
from malsensor.daemon.pipeline import extract_file

PCAPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pcap"


def best_us(fn, n: int, repeat: int) -> float:
    """Best of ``repeat`` runs, µs per row (the minimum is the least disturbed by other load)."""
    fn()  # compile / warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    cbs = [cb for cap in sorted(PCAPS.glob("*.pcap*")) for cb in extract_file(cap)]
    rec = np.concatenate([cb.records for cb in cbs])
    ftr = np.concatenate([cb.features for cb in cbs])
    idx = np.arange(a.rows) % rec.shape[0]
    rec, ftr = np.ascontiguousarray(rec[idx]), np.ascontiguousarray(ftr[idx])
    n = rec.shape[0]
    probs = np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (n, 1))
    pb = eve.PredictionBatch("m", "v1", "end", ["benign", "c2", "scan"], rec, ftr, probs,
                             np.zeros(n, dtype=np.int64), np.tile(np.array([[0, 1]]), (n, 1)),
                             np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64))
    has_id = hasattr(eve, "community_ids")
    print(f"{n:,} connections ({len(set(map(tuple, rec[:, :5].tolist()))):,} distinct 5-tuples); "
          f"this tree {'has' if has_id else 'has no'} Community ID; best of {a.repeat}")
    events = best_us(lambda: eve.eve_lines(pb), n, a.repeat)
    print(f"{'EVE events (eve_lines, with features)':44s} {events:7.3f} µs/event")
    print(f"{'extract rows (jsonl_bytes)':44s} {best_us(lambda: jsonl_bytes(rec, ftr), n, a.repeat):7.3f} µs/row")
    if not has_id:
        return
    from malsensor.daemon.outputs.community_id import TEXT_LEN, _record_ids

    out = np.empty((n, TEXT_LEN), dtype=np.uint8)
    ours = best_us(lambda: _record_ids(rec, 0, out), n, a.repeat)
    events = best_us(lambda: eve.eve_lines(pb), n, a.repeat)  # again, beside it
    print(f"{'Community ID alone (its numba kernel)':44s} {ours:7.3f} µs/connection "
          f"({ours / events:.1%} of an event, timed again beside it)")
    try:
        import communityid
    except ImportError:
        return
    m = min(n, 20_000)
    tuples = []
    for r in rec[:m]:
        key = int(r[L.KEY])
        proto = (key >> 32) & 0xFF
        s, d = format_ip(int(r[L.SRC_HI]), int(r[L.SRC_LO])), format_ip(int(r[L.DST_HI]), int(r[L.DST_LO]))
        tuples.append(communityid.FlowTuple(proto, s, d, (key >> 16) & 0xFFFF, key & 0xFFFF)
                      if proto in (1, 6, 17, 58, 132) else communityid.FlowTuple(proto, s, d))
    cid = communityid.CommunityID()
    ref = best_us(lambda: [cid.calc(t) for t in tuples], m, a.repeat)
    print(f"{'communityid package (reference), same tuples':44s} {ref:7.3f} µs/connection "
          f"({ref / ours:.0f}x ours)")


if __name__ == "__main__":
    main()
