#!/usr/bin/env bash
# Install everything, load the demo tariff and subscribers, and start the server in the foreground.
#
# Uses the Redis/PostgreSQL of $OCC_REDIS_URL / $OCC_DATABASE_URL (default: 127.0.0.1:6379 and :5432) when
# they answer, else starts private ones under run/ (see scripts/services.sh). Safe to run again: the
# migrations, the tariff and the demo data are loaded idempotently. Stop the server with Ctrl-C; stop the
# private services with `scripts/services.sh stop`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

TARIFF=config/tariffs/demo.toml

current="installing"
trap 'rc=$?; ((rc == 0)) || printf "error: quickstart stopped at: %s (exit %d)\n" "$current" "$rc" >&2' EXIT

run() {
    current="$*"
    occ_say "$*"
    "$@"
}

occ_ensure_venv
current="starting Redis and PostgreSQL"
occ_ensure_services

run occ db migrate
current="occ tariff load $TARIFF"
[[ -f $TARIFF ]] || occ_die "$TARIFF is missing"
run occ tariff load "$TARIFF"
run scripts/demo-data.sh
run occ balance alice

port=${OCC_METRICS_PORT:-9464}
cat <<MSG

==> starting the server: occ serve   (Ctrl-C stops it)
    Redis:       $OCC_REDIS_URL
    PostgreSQL:  $OCC_DATABASE_URL
    metrics:     http://127.0.0.1:$port/metrics
    health:      http://127.0.0.1:$port/health
    demo:        prepaid alice (msisdn 447700900001, RADIUS user alice / alice-secret, 10.00 EUR),
                 postpaid bob (msisdn 447700900002, credit limit 50.00 EUR)
    in another shell:  source .venv/bin/activate && eval "\$(scripts/services.sh env)" && occ balance alice

MSG
trap - EXIT
exec occ serve
