#!/usr/bin/env bash
# A registry volume read and restored through nfs:// vs from/to a local path, same data, same
# machine (BENCHMARKS.md, "Registry volume on NFS"). Usage:
#   benches/nfs.sh VOLUME_DIR EXPORT_DIR NFS_URL_OF_EXPORT [QUERY]
# e.g. benches/nfs.sh /tmp/stowage-bench/night1/dtr-registry-benchbench01 /tmp/gn/export \
#        nfs://127.0.0.1/tmp/gn/export '?nfsport=20490&mountport=20491'
# VOLUME_DIR is copied onto EXPORT_DIR (the directory the NFS server exports) first.
set -euo pipefail
volume=$1 export_dir=$2 nfs=$3 query=${4:-}
bin=${STOWAGE_BIN:-${CARGO_TARGET_DIR:-target}/release/stowage}
name=$(basename "$volume")
work=$(mktemp -d)
trap 'rm -rf "$work" "$export_dir/restored"' EXIT
[ -d "$export_dir/$name" ] || cp -a "$volume" "$export_dir/"
export STOWAGE_PASSWORD=bench
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
for round in 1 2; do
  for side in local nfs; do
    rm -rf "$work/repo" "$work/cache" "$work/restored" "$export_dir/restored"
    mkdir -p "$export_dir/restored"
    export STOWAGE_REPO=$work/repo STOWAGE_CACHE_DIR=$work/cache
    "$bin" -q init >/dev/null
    if [ $side = local ]; then
      source=$volume target=$work/restored
    else
      source="$nfs/$name$query" target="$nfs/restored$query"
    fi
    sync
    backup=$(seconds "$bin" -q backup "$source")
    unchanged=$(seconds "$bin" -q backup "$source")
    sync
    restore=$(seconds "$bin" -q restore latest --target "$target")
    echo "round $round $side: backup $backup s, unchanged $unchanged s, restore $restore s"
  done
done
