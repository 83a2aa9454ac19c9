#!/usr/bin/env bash
# The nightly job of docs/operations.md: the registry volume and the DTR metadata into the
# local repository, retention there, an offsite copy with its own retention, and a seventh
# of the offsite copy read back whole each night (all of it every week).
#
# Settings come from the environment (the systemd unit reads /etc/stowage/nightly.env):
#   STOWAGE_REPO, STOWAGE_PASSWORD_FILE (or STOWAGE_PASSWORD_COMMAND)  the local repository
#   STOWAGE_VOLUME          the registry volume, e.g. /var/lib/docker/volumes/dtr-registry-ab12cd34ef56
#   STOWAGE_METADATA_COMMAND  the command printing the metadata tar, e.g.
#                           docker run --rm docker/dtr backup --ucp-url ... --existing-replica-id ab12cd34ef56
#                           (unset: no metadata backup)
#   STOWAGE_OFFSITE         the offsite repository, e.g. s3://backups/dtr (unset: no copy)
#   STOWAGE_KEEP            the retention, default "--keep-daily 7 --keep-weekly 4 --keep-monthly 12"
#   STOWAGE_OFFSITE_KEEP    the offsite retention, default: the same
#   STOWAGE                 the binary, default: stowage on PATH
#
# Exit status: 0 when every step succeeded, 3 when a backup saved a partial snapshot and
# everything else succeeded, 1 when a step failed (the later steps still run, except that a
# failed backup is not copied offsite).
set -uo pipefail

stowage=${STOWAGE:-stowage}
keep=${STOWAGE_KEEP:-"--keep-daily 7 --keep-weekly 4 --keep-monthly 12"}
offsite_keep=${STOWAGE_OFFSITE_KEEP:-$keep}
status=0

step() {
  echo "== $*" >&2
  "$@"
  local rc=$?
  case $rc in
    0) ;;
    3) [ "$status" -eq 0 ] && status=3 ;;
    *) echo "!! failed ($rc): $*" >&2; status=1 ;;
  esac
  return $rc
}

: "${STOWAGE_VOLUME:?set STOWAGE_VOLUME to the registry volume}"
backed_up=yes
step "$stowage" backup "$STOWAGE_VOLUME" --tag nightly --skip-if-unchanged -q || {
  [ $? -eq 3 ] || backed_up=no
}
if [ -n "${STOWAGE_METADATA_COMMAND:-}" ]; then
  step "$stowage" backup-metadata --tag nightly -q --stdin-from-command -- \
    sh -c "$STOWAGE_METADATA_COMMAND" || backed_up=no
fi
# shellcheck disable=SC2086 # the retention is a list of options
step "$stowage" forget $keep --prune -q

if [ -n "${STOWAGE_OFFSITE:-}" ]; then
  if [ "$backed_up" = yes ]; then
    step "$stowage" copy --to "$STOWAGE_OFFSITE" -q
  fi
  # shellcheck disable=SC2086
  step "$stowage" --repo "$STOWAGE_OFFSITE" forget $offsite_keep --prune -q
  step "$stowage" --repo "$STOWAGE_OFFSITE" check -q --read-data-subset "$(date +%u)/7"
fi
exit "$status"
