#!/usr/bin/env bash
# Demo subscribers for scripts/quickstart.sh. Safe to run again: every provisioning command is idempotent
# (what exists already is reported and left alone; a top-up reference credits once).
#
#   alice  prepaid,  EUR, plan demo, msisdn 447700900001, RADIUS user alice / alice-secret,
#          topped up 10.00 EUR (reference demo-alice-1)
#   bob    postpaid, EUR, plan demo, credit limit 50.00, msisdn 447700900002
#
# Needs the schema migrated and the demo tariff loaded (scripts/quickstart.sh does both first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
occ_ensure_venv
occ_ensure_services

# demo ARGS... — run `occ ARGS...`, show what it prints, stop on failure.
demo() {
    local rc=0
    printf '    occ %s\n' "$*"
    occ "$@" 2>&1 | sed 's/^/        /' || rc=$?
    ((rc == 0)) || occ_die "demo data: 'occ $*' failed (exit $rc)"
}

demo account create alice --type prepaid --plan demo --currency EUR
demo identity add alice --msisdn 447700900001
demo identity add alice --radius-user alice --password alice-secret
demo topup alice 10.00 --reference demo-alice-1

demo account create bob --type postpaid --plan demo --currency EUR --credit-limit 50.00
demo identity add bob --msisdn 447700900002
