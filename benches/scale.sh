#!/usr/bin/env bash
# The scaling benchmark: stowage on a registry shaped by repository count (`stowage-fixtures
# links`: link files in their own directories, as a real DTR holds most of), measuring wall
# time and peak RSS of each step with GNU time.
#
#   benches/scale.sh [--repositories N] [--layers N] [--revisions N] [--tags N] [--work DIR]
#                    [--stowage BIN]
#
# Defaults: 2,000 repositories of 100 layer links, 100 revisions and 10 tags (440,256 files
# in 514,530 directories), in /tmp/stowage-scale; the release binary (built when missing).
# The volume is generated once and kept for later runs, each run one night further (the
# night-2 step backs up the next night's pushes); the repository is made anew.
set -euo pipefail
cd "$(dirname "$0")/.."

repositories=2000 layers=100 revisions=100 tags=10
work=/tmp/stowage-scale
stowage=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repositories) repositories=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --revisions) revisions=$2; shift 2 ;;
    --tags) tags=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --stowage) stowage=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$stowage" ]; then
  cargo build --release -p stowage-cli >&2
  stowage=${CARGO_TARGET_DIR:-target}/release/stowage
fi
cargo build --release -p stowage-fixtures >&2
fixtures=${CARGO_TARGET_DIR:-target}/release/stowage-fixtures

shape="r${repositories}-l${layers}-v${revisions}-t${tags}"
volumes="$work/volume-$shape"
night=$(cat "$volumes.night" 2>/dev/null || echo 1)
links() {
  "$fixtures" links --out "$volumes" --repositories "$repositories" --layers "$layers" \
    --revisions "$revisions" --tags "$tags" --night "$1" >&2
  echo "$1" > "$volumes.night"
}
links "$night"
volume=$(echo "$volumes"/dtr-registry-*)
files=$(find "$volume" -type f | wc -l)
dirs=$(find "$volume" -type d | wc -l)

export STOWAGE_PASSWORD=scale STOWAGE_REPO="$work/repo" STOWAGE_CACHE_DIR="$work/cache"
rm -rf "$work/repo" "$work/cache" "$work/restore"
"$stowage" init >/dev/null 2>&1

step() {
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$work/time" "$stowage" "$@" --quiet >/dev/null 2>"$work/stderr" || {
    cat "$work/stderr" >&2; exit 1; }
  read -r seconds kib < "$work/time"
  printf '| %s | %s s | %s MiB |\n' "$name" "$seconds" "$((kib / 1024))"
}

echo "stowage $("$stowage" --version | cut -d' ' -f2), $files files in $dirs directories ($shape)"
echo
echo "| step | time | peak RSS |"
echo "|---|---|---|"
step "initial backup" backup "$volume"
step "unchanged backup" backup "$volume"
links $((night + 1))
sleep 1  # past the racy margin: the files just written are not re-read for their ctime
step "night-2 backup" backup "$volume"
step "check" check
step "ls" ls latest
ids=$("$stowage" snapshots --json | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin) if "id" in s))')
read -r first _ third <<< "$ids"
step "diff" diff "$first" "$third"
step "restore" restore latest --target "$work/restore"
diff -r "$volume" "$work/restore/$(basename "$volume")" >/dev/null || {
  echo "the restore differs from the volume" >&2; exit 1; }
step "forget" forget --keep-last 1
step "prune" prune --grace 0s
