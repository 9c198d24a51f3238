#!/usr/bin/env bash
# Install everything and run the whole test suite: ruff (lint + format check), mypy, pytest.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -k rating -x    # extra arguments go to pytest
#
# Uses the Redis/PostgreSQL of $OCC_REDIS_URL / $OCC_DATABASE_URL (default: 127.0.0.1:6379 and :5432) when
# they answer, else starts private ones under run/ (see scripts/services.sh). Every step runs even when an
# earlier one failed; the exit status is non-zero when any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

occ_ensure_venv
occ_ensure_services
occ_ensure_test_peers

failed=()

step() {
    local number=$1 name=$2 started=$SECONDS rc=0
    shift 2
    printf '\n==> [%s] %s\n' "$number" "$name"
    "$@" || rc=$?
    if ((rc != 0)); then
        printf '==> %s: FAILED (exit %d, %d s)\n' "$name" "$rc" "$((SECONDS - started))" >&2
        failed+=("$name,")
    else
        printf '==> %s: ok (%d s)\n' "$name" "$((SECONDS - started))"
    fi
}

run_pytest() {
    local rc=0
    python -m pytest "$@" || rc=$?
    if ((rc == 5)); then
        # pytest's "no tests collected": not a failure of the code, but say so loudly.
        echo "WARNING: pytest collected no tests" >&2
        return 0
    fi
    return "$rc"
}

step 1/4 "ruff check" ruff check .
step 2/4 "ruff format --check" ruff format --check .
step 3/4 mypy mypy
printf '\n==> [4/4] pytest (Redis %s, PostgreSQL %s)\n' "$OCC_TEST_REDIS_URL" "$OCC_TEST_DATABASE_URL"
rc=0
run_pytest "$@" || rc=$?
if ((rc != 0)); then
    failed+=("pytest,")
fi

if ((${#failed[@]} > 0)); then
    failures="${failed[*]}"
    printf '\n==> FAILED: %s\n' "${failures%,}" >&2
    exit 1
fi
