#!/usr/bin/env bash
# The scaling benchmark: stowage on a registry shaped by repository count (`stowage-fixtures
# links`: link files in their own directories, as a real DTR holds most of), measuring wall
# time and peak RSS of each step with GNU time; with --compare, restic and borg (Debian's
# packages, installed when missing) take the same steps on the same volume in the same run.
#
#   benches/scale.sh [--repositories N] [--layers N] [--revisions N] [--tags N] [--work DIR]
#                    [--stowage BIN] [--compare] [--results CSV] [--chart SVG]
#
# Each measurement is also appended to the results file (default $WORK/results.csv: files,
# directories, tool, step, seconds, MiB, version, date), and the chart of all its rows drawn
# (benches/scale-chart.py, default $WORK/scale.svg): runs at several sizes make its lines.
#
# Defaults: 2,000 repositories of 100 layer links, 100 revisions and 10 tags (440,256 files
# in 514,530 directories), in /tmp/stowage-scale; the release binary (built when missing).
# The volume is generated once and kept for later runs, each run one night further (the
# night-2 step backs up the next night's pushes); the repositories are made anew.
set -euo pipefail
cd "$(dirname "$0")/.."

repositories=2000 layers=100 revisions=100 tags=10
work=/tmp/stowage-scale
stowage=""
results="" chart=""
tools=(stowage)
while [ $# -gt 0 ]; do
  case "$1" in
    --repositories) repositories=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --revisions) revisions=$2; shift 2 ;;
    --tags) tags=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --stowage) stowage=$2; shift 2 ;;
    --compare) tools=(stowage restic borg); shift ;;
    --results) results=$2; shift 2 ;;
    --chart) chart=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$stowage" ]; then
  cargo build --release -p stowage-cli >&2
  stowage=${CARGO_TARGET_DIR:-target}/release/stowage
fi
cargo build --release -p stowage-fixtures >&2
fixtures=${CARGO_TARGET_DIR:-target}/release/stowage-fixtures
if [ ${#tools[@]} -gt 1 ] && ! { command -v restic && command -v borg; } >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq restic borgbackup >/dev/null
fi

results=${results:-$work/results.csv} chart=${chart:-$work/scale.svg}
mkdir -p "$work"
[ -s "$results" ] || echo "files,dirs,tool,step,seconds,mib,version,date" > "$results"

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
export RESTIC_PASSWORD=scale RESTIC_REPOSITORY="$work/restic" RESTIC_CACHE_DIR="$work/cache-restic"
export BORG_PASSPHRASE=scale BORG_REPO="$work/borg" BORG_CACHE_DIR="$work/cache-borg"
export BORG_CONFIG_DIR="$work/config-borg" BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
rm -rf "$work"/{repo,cache,restore,restic,cache-restic,borg,cache-borg,config-borg}
rm -rf "$work"/restore-*
"$stowage" init >/dev/null 2>&1
for tool in "${tools[@]}"; do
  case $tool in
    restic) restic init -q >/dev/null ;;
    borg) borg init -e repokey-blake2 >/dev/null 2>&1 ;;
  esac
done

# cell <tool> <command...>: runs it under GNU time, prints "| <secs> s, <MiB> MiB ".
cell() {
  local tool=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || {
    echo "$tool failed:" >&2; tail -5 "$work/stderr" >&2; exit 1; }
  read -r seconds kib < "$work/time"
  printf '| %s s, %s MiB ' "$seconds" "$((kib / 1024))"
  # `step` is the calling row's.
  echo "$files,$dirs,$tool,$step,$seconds,$((kib / 1024)),$version,$(date -u +%FT%TZ)" >> "$results"
}

# row <step>: the step for each tool, one table row.
row() {
  local step=$1 tool
  printf '| %s ' "$step"
  for tool in "${tools[@]}"; do
    case "$tool/$step" in
      stowage/*backup) cell "$tool" "$stowage" backup "$volume" --quiet ;;
      restic/*backup) cell "$tool" restic backup -q "$volume" ;;
      borg/*backup) cell "$tool" borg create "::$(date +%s%N)" "$volume" ;;
      stowage/check) cell "$tool" "$stowage" check --quiet ;;
      restic/check) cell "$tool" restic check -q ;;
      borg/check) cell "$tool" borg check ;;
      # Each restore is removed once timed (stowage's once compared), so the disk holds the
      # volume and one copy of it at most.
      stowage/restore)
        cell "$tool" "$stowage" restore latest --target "$work/restore" --quiet
        diff -r "$volume" "$work/restore/$(basename "$volume")" >/dev/null || {
          echo "stowage's restore differs from the volume" >&2; exit 1; }
        rm -rf "$work/restore" ;;
      restic/restore)
        cell "$tool" restic restore -q latest --target "$work/restore-restic"
        rm -rf "$work/restore-restic" ;;
      borg/restore)
        mkdir -p "$work/restore-borg"
        cell "$tool" sh -c "cd '$work/restore-borg' && borg extract \"::\$(borg list --last 1 --short)\""
        rm -rf "$work/restore-borg" ;;
      stowage/ls) cell "$tool" "$stowage" ls latest ;;
      restic/ls) cell "$tool" restic ls latest ;;
      borg/ls) cell "$tool" sh -c 'borg list "::$(borg list --last 1 --short)"' ;;
      stowage/diff) cell "$tool" "$stowage" diff "$first" latest ;;
      restic/diff) cell "$tool" sh -c 'restic diff $(restic snapshots --json | python3 -c "import json,sys; s=json.load(sys.stdin); print(s[0][\"short_id\"], s[-1][\"short_id\"])")' ;;
      borg/diff) cell "$tool" sh -c 'borg diff "::$(borg list --first 1 --short)" "$(borg list --last 1 --short)"' ;;
      stowage/forget) cell "$tool" "$stowage" forget --keep-last 1 --quiet ;;
      restic/forget) cell "$tool" restic forget -q --keep-last 1 ;;
      borg/forget) cell "$tool" borg prune --keep-last 1 ;;
      stowage/prune) cell "$tool" "$stowage" prune --grace 0s --quiet ;;
      restic/prune) cell "$tool" restic prune -q ;;
      borg/prune) cell "$tool" borg compact ;;
      *) printf '| ' ;;
    esac
  done
  echo "|"
}

version="stowage $("$stowage" --version | cut -d' ' -f2)"
echo "$version, $files files in $dirs directories ($shape)"
echo
printf '| step |'; printf ' %s |' "${tools[@]}"; echo
printf '|---|'; printf -- '---|%.0s' "${tools[@]}"; echo
row "initial backup"
first=$("$stowage" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
row "unchanged backup"
links $((night + 1))
sleep 1  # past the racy margin: the files just written are not re-read for their ctime
row "night-2 backup"
row "check"
row "ls"
row "diff"
row "restore"
row "forget"
row "prune"
rm -rf "$work"/restore "$work"/restore-*
python3 benches/scale-chart.py "$results" -o "$chart"
echo
echo "results appended to $results; chart in $chart"
