#!/bin/sh
# Re-create the default model shipped in contrib/models/default (what `make run` and the
# .deb serve).
#
#   contrib/models/train-default.sh [DATA_DIR]      (default: ../shared/data)
#
# A random forest (contrib/models/forest-default.toml: 32 trees of depth <= 10, ~0.4 MB) on
# the 17 conn features (malsensor semantics), binary labels benign/malicious from the folder
# default_data.py lays out: the eight captures of DATA_DIR/pcap (four malicious: Stratosphere
# botnet C&C, scanning host, SSH brute force, a SYN scan; four benign), the 414 IoT Sentinel
# device-setup captures (benign) and the 65,870 UNSW-NB15 rows converted to malsensor's
# definitions, in 16 blocks of consecutive rows per label (see default_data.py).
# The split is by group (each capture file or UNSW block file on one side: 60/20/20 of every
# label's rows, seed 0), so the test figures in meta.json come from captures the model never
# saw. Alert threshold 0.8 (etc/malsensor.toml); why, and the figures per held-out capture:
# contrib/models/eval_default.py, docs/training.md "The default model", README.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=${1:-$repo/../shared/data}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=${MALSENSOR_PYTHON:-$repo/.venv/bin/python}
train=${MALSENSOR_TRAIN:-$repo/.venv/bin/malsensor-train}
"$python" "$here/default_data.py" "$data" "$work/data"
rm -rf "$here/default"
"$train" fit --model "$here/forest-default.toml" --data "$work/data" --label-from folder --semantics malsensor \
    --split group --seed 0 --out "$here" --name default --reports "$work/reports"
