#!/usr/bin/env bash
# Side-by-side: stowage, restic and borg (from Debian's packages) and rustic (not packaged by
# Debian: used when on PATH or installed by `INSTALL_RUSTIC=1`, which runs
# `cargo install rustic-rs`, ~15 minutes) on the same generated registry volume, in
# alternating rounds, in one run:
# initial backup, night-2 incremental (the volume advanced in place), restore; wall time
# and peak RSS (GNU time). Prints each tool's medians and stowage's ratios.
#
#   benches/compare.sh [size]            default 1536MiB
#   ROUNDS=3 BENCH_DIR=/tmp/x benches/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1536MiB}
rounds=${ROUNDS:-2}
work=${BENCH_DIR:-/tmp/stowage-compare}
replica=benchbench01
vol=dtr-registry-$replica

scripts/setup
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
command -v /usr/bin/time >/dev/null || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
rustic_root=${STOWAGE_TOOLS:-$HOME/.cache/stowage-tools}/rustic
export PATH=$rustic_root/bin:$PATH
if ! command -v rustic >/dev/null && [ "${INSTALL_RUSTIC:-0}" = 1 ]; then
  cargo install -q --locked rustic-rs --root "$rustic_root"
fi
cargo build --release -q -p stowage-cli -p stowage-fixtures
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
tools=(stowage restic borg)
command -v rustic >/dev/null && tools+=(rustic)

mkdir -p "$work"
if [ ! -f "$work/night1/.spec" ] || [ "$(cat "$work/night1/.spec")" != "$size" ]; then
  rm -rf "$work/night1"
  "$bin/stowage-fixtures" volume --out "$work/night1" --size "$size" --replica $replica --night 1
  echo "$size" > "$work/night1/.spec"
fi
bytes=$(du -sb "$work/night1/$vol" | cut -f1)
echo "volume $vol: $bytes bytes; tools: ${tools[*]}; $rounds round(s)"

export STOWAGE_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench RUSTIC_PASSWORD=bench
export STOWAGE_CACHE_DIR=$work/cache/stowage RESTIC_CACHE_DIR=$work/cache/restic
export RUSTIC_CACHE_DIR=$work/cache/rustic
export BORG_CACHE_DIR=$work/cache/borg BORG_CONFIG_DIR=$work/cache/borg-config
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
results=$work/results.tsv
: > "$results"

# run <tool> <step> <command...>: times the command, appends "tool step secs kib".
run() {
  local tool=$1 step=$2; shift 2
  /usr/bin/time -f "%e %M" -o "$work/time.out" "$@" > "$work/out.log" 2>&1 \
    || { echo "$tool $step failed:"; tail -20 "$work/out.log"; exit 1; }
  read -r secs kib < "$work/time.out"
  printf '%s\t%s\t%s\t%s\n' "$tool" "$step" "$secs" "$kib" >> "$results"
  printf '  %-7s %-12s %7.2f s  %7.1f MiB\n' "$tool" "$step" "$secs" "$(echo "$kib/1024" | bc -l)"
}

repo() { echo "$work/repo-$1"; }
backup() { # tool, snapshot label
  local r; r=$(repo "$1")
  case $1 in
    stowage) "$bin/stowage" -q --repo "$r" backup "$work/live/$vol" ;;
    restic) restic -q -r "$r" backup "$work/live/$vol" ;;
    rustic) rustic -r "$r" backup "$work/live/$vol" ;;
    borg) (cd "$work/live" && borg create "$r::$2" "$vol") ;;
  esac
}
restore() {
  local r; r=$(repo "$1"); mkdir -p "$work/restore"
  case $1 in
    stowage) "$bin/stowage" -q --repo "$r" restore latest --target "$work/restore" ;;
    restic) restic -q -r "$r" restore latest --target "$work/restore" ;;
    rustic) rustic -r "$r" restore latest "$work/restore" ;;
    borg) (cd "$work/restore" && borg extract "$r::night2") ;;
  esac
}
init() {
  local r; r=$(repo "$1"); rm -rf "$r" "$work/cache/$1"
  case $1 in
    stowage) "$bin/stowage" --repo "$r" init ;;
    restic) restic -q -r "$r" init ;;
    rustic) rustic -r "$r" init ;;
    borg) borg init -e repokey-blake2 "$r" ;;
  esac > /dev/null 2>&1
}
export -f backup restore repo
export bin work vol

for round in $(seq 1 "$rounds"); do
  echo "-- round $round"
  for tool in "${tools[@]}"; do
    init "$tool"
    rm -rf "$work/live" "$work/restore" && mkdir -p "$work/live"
    cp -a "$work/night1/$vol" "$work/night1/.stowage-fixtures-cache" "$work/live/"
    sync; sleep 2
    run "$tool" backup bash -c "backup $tool night1"
    "$bin/stowage-fixtures" volume --out "$work/live" --size "$size" --replica $replica --night 2 > /dev/null
    sync; sleep 2
    run "$tool" incremental bash -c "backup $tool night2"
    run "$tool" restore bash -c "restore $tool"
  done
done

echo "-- medians (MB/s over the $bytes-byte volume; incremental in seconds)"
python3 - "$results" "$bytes" <<'PY'
import sys, statistics, collections
rows = [l.split('\t') for l in open(sys.argv[1]).read().splitlines()]
size = int(sys.argv[2])
secs, mem = collections.defaultdict(list), collections.defaultdict(list)
for tool, step, s, kib in rows:
    secs[(tool, step)].append(float(s)); mem[(tool, step)].append(int(kib) / 1024)
tools = list(dict.fromkeys(r[0] for r in rows))
med = lambda k: statistics.median(secs[k])
print(f"{'tool':8} {'backup MB/s':>12} {'incr s':>8} {'restore MB/s':>13} {'peak MiB':>9}")
for t in tools:
    peak = max(max(mem[(t, s)]) for s in ('backup', 'incremental', 'restore'))
    print(f"{t:8} {size/med((t,'backup'))/1e6:12.1f} {med((t,'incremental')):8.2f} "
          f"{size/med((t,'restore'))/1e6:13.1f} {peak:9.1f}")
for t in tools[1:]:
    print(f"stowage vs {t}: backup {med((t,'backup'))/med(('stowage','backup')):.2f}x faster, "
          f"incremental {med(('stowage','incremental'))/med((t,'incremental')):.2f}x the time, "
          f"restore {med((t,'restore'))/med(('stowage','restore')):.2f}x faster")
PY
