#!/bin/sh
# Re-create the default model shipped in contrib/models/default (what `make run` serves).
#
#   contrib/models/train-default.sh [DATA_DIR]      (default: ../shared/data)
#
# A random forest on the 17 conn features (malsensor semantics), trained on the eight
# public captures of DATA_DIR/pcap, each connection labelled by its capture: "malicious"
# for the Stratosphere botnet/scanning/brute-force captures and the SYN scan, "benign" for
# the browsing and application traces. It is a demonstration model (eight captures, a
# random split; many scan connections are near-duplicates), not a detector to deploy:
# train your own with malsensor-train and publish it into the models directory.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=${1:-$repo/../shared/data}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data/malicious" "$work/data/benign"
for f in stratosphere_cc_capture1.pcap stratosphere_scanning_host.pcap stratosphere_ssh_bruteforce.pcap synscan.pcapng; do
    ln -s "$data/pcap/$f" "$work/data/malicious/$f"
done
for f in http_espn.pcapng ndpi_1kxun.pcap ndpi_443_firefox.pcap retina_tls_ciphers.pcap; do
    ln -s "$data/pcap/$f" "$work/data/benign/$f"
done
train=${MALSENSOR_TRAIN:-$repo/.venv/bin/malsensor-train}
rm -rf "$here/default"
"$train" fit --model "$here/forest-default.toml" --data "$work/data" --label-from folder --semantics malsensor \
    --split random --seed 0 --out "$here" --name default --reports "$work/reports"
