#!/usr/bin/env bash
# Shared helpers of scripts/quickstart.sh and scripts/test.sh: the Python environment and the two services.
#
# Sourced:   source scripts/services.sh; occ_ensure_venv; occ_ensure_services
# Run:       scripts/services.sh start | stop | clean | status | env
#
# Redis and PostgreSQL: the URL in $OCC_REDIS_URL / $OCC_DATABASE_URL (else the defaults of config/occ.toml)
# is used when it answers. Otherwise a private instance is started under the run directory ($OCC_RUN_DIR,
# default run/): Redis on 127.0.0.1:6390, PostgreSQL on 127.0.0.1:5440 (or on the port of an explicitly set
# 127.0.0.1/localhost URL), installing redis-server / postgresql with apt-get when the programs are missing.
# Private instances keep running after the script ends, so the next run is fast; `scripts/services.sh stop`
# stops them and `clean` also deletes their data (neither touches a Redis or PostgreSQL it did not start).
# `eval "$(scripts/services.sh env)"` points a shell (occ, pytest) at the same services.
#
# The sourcing script sets its own shell options; the functions here check every step themselves.

OCC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OCC_VENV=${OCC_VENV:-$OCC_ROOT/.venv}
OCC_WAIT_S=${OCC_WAIT_S:-30}
OCC_PRIVATE_REDIS_PORT=${OCC_PRIVATE_REDIS_PORT:-6390}
OCC_PRIVATE_PG_PORT=${OCC_PRIVATE_PG_PORT:-5440}
OCC_DEFAULT_REDIS_URL=redis://127.0.0.1:6379/0
OCC_DEFAULT_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test

_occ_run_dir() {
    local dir=${OCC_RUN_DIR:-run}
    [[ $dir == /* ]] || dir=$OCC_ROOT/$dir
    printf '%s\n' "$dir"
}

occ_say() { printf '==> %s\n' "$*"; }
occ_note() { printf '    %s\n' "$*"; }
occ_warn() { printf 'warning: %s\n' "$*" >&2; }
occ_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------------------
# apt-get, only when a program is missing

_occ_sudo() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 126
    fi
}

_occ_apt_has_candidates() {
    local pkg
    for pkg in "$@"; do
        apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]' || return 1
    done
}

# occ_apt_install PACKAGE... — install Debian packages; `apt-get update` first only when the lists lack them.
occ_apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        occ_die "need the packages $* but apt-get is not available: install them and run again"
    if [[ $EUID -ne 0 ]] && ! _occ_sudo true; then
        occ_die "need the packages $*: run as root (or with password-less sudo), or install them yourself"
    fi
    occ_say "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! _occ_apt_has_candidates "$@"; then
        _occ_sudo apt-get update -qq || occ_die "apt-get update failed"
    fi
    if ! _occ_sudo apt-get install -y -q --no-install-recommends "$@"; then
        # The package lists may be stale (old versions gone from the mirror): refresh once and retry.
        _occ_sudo apt-get update -qq || occ_die "apt-get update failed"
        _occ_sudo apt-get install -y -q --no-install-recommends "$@" || occ_die "apt-get install $* failed"
    fi
}

# ---------------------------------------------------------------------------------------------------------
# Real protocol peers the tests run against: tshark (decodes what the server sends), radclient (a RADIUS
# client, freeradius-utils) and freeDiameterd
# (a Diameter relay in front of the server). Installed once with apt-get when missing.

occ_ensure_test_peers() {
    local missing=()
    command -v tshark >/dev/null 2>&1 || missing+=(tshark)
    command -v freeDiameterd >/dev/null 2>&1 || missing+=(freediameterd freediameter-extensions)
    command -v radclient >/dev/null 2>&1 || missing+=(freeradius-utils)
    # pdftotext reads the invoice PDFs back in the tests; DejaVu lets them print any script
    command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
    [[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
    ((${#missing[@]} == 0)) && return 0
    occ_apt_install "${missing[@]}"
}

# ---------------------------------------------------------------------------------------------------------
# Python: .venv with the project installed editable, with its test extras

_occ_find_python() {
    local candidate
    for candidate in ${OCC_PYTHON:-} python3.11 python3; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

_occ_venv_stamp() {
    # Changes when pyproject.toml or the interpreter changes; then the install runs again.
    {
        cat "$OCC_ROOT/pyproject.toml"
        "$OCC_VENV/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

# occ_ensure_venv — create or refresh $OCC_VENV and put its bin/ first on PATH.
occ_ensure_venv() {
    local python stamp_file=$OCC_VENV/.occ-install-stamp stamp started
    if [[ -x $OCC_VENV/bin/python ]] &&
        ! "$OCC_VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        occ_warn "$OCC_VENV does not run a Python >= 3.11; creating it again"
        rm -rf "$OCC_VENV"
    fi
    if [[ ! -x $OCC_VENV/bin/python ]]; then
        python=$(_occ_find_python) ||
            occ_die "Python >= 3.11 not found (tried ${OCC_PYTHON:+$OCC_PYTHON, }python3.11, python3):" \
                "install it or name it in OCC_PYTHON"
        occ_say "creating $OCC_VENV with $python" \
            "($("$python" -c 'import platform; print(platform.python_version())'))"
        rm -rf "$OCC_VENV"
        if ! "$python" -m venv "$OCC_VENV" >/dev/null 2>&1; then
            # Debian ships venv/ensurepip in a separate package.
            rm -rf "$OCC_VENV"
            local minor
            minor=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            occ_apt_install "python$minor-venv"
            "$python" -m venv "$OCC_VENV" || occ_die "cannot create the virtual environment $OCC_VENV"
        fi
    fi
    stamp=$(_occ_venv_stamp)
    if [[ ! -f $stamp_file || $(<"$stamp_file") != "$stamp" ]]; then
        occ_say "installing occ and its test tools into $OCC_VENV (pip install -e '.[test]')"
        started=$SECONDS
        rm -f "$stamp_file"
        "$OCC_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "${OCC_ROOT}[test]" ||
            occ_die "pip install -e '.[test]' failed (see above)"
        printf '%s\n' "$stamp" >"$stamp_file"
        occ_note "installed in $((SECONDS - started)) s"
    fi
    export VIRTUAL_ENV=$OCC_VENV
    case ":$PATH:" in
    *":$OCC_VENV/bin:"*) ;;
    *) export PATH=$OCC_VENV/bin:$PATH ;;
    esac
}

# ---------------------------------------------------------------------------------------------------------
# URL helpers (plain bash: they run before the venv exists)

# _occ_url_parts URL DEFAULT_PORT — sets _host _port _path (path without the leading slash, no query).
_occ_url_parts() {
    local rest=${1#*://}
    rest=${rest%%\?*}
    _path=
    if [[ $rest == */* ]]; then
        _path=${rest#*/}
        rest=${rest%%/*}
    fi
    rest=${rest##*@}
    if [[ $rest =~ ^\[([^]]*)\](:([0-9]+))?$ ]]; then
        _host=${BASH_REMATCH[1]}
        _port=${BASH_REMATCH[3]:-$2}
    elif [[ $rest == *:* ]]; then
        _host=${rest%%:*}
        _port=${rest##*:}
    else
        _host=$rest
        _port=$2
    fi
}

_occ_is_loopback() { [[ $1 == 127.0.0.1 || $1 == localhost ]]; }

# _occ_tcp_open HOST PORT — something accepts TCP connections there (bounded to 3 s).
_occ_tcp_open() {
    # shellcheck disable=SC2016  # $1/$2 expand in the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

_occ_pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# _occ_redis_pid_alive PID — PID is a running redis-server (not a recycled pid).
_occ_redis_pid_alive() { _occ_pid_alive "${1:-}" && [[ $(cat "/proc/$1/comm" 2>/dev/null) == redis* ]]; }

# ---------------------------------------------------------------------------------------------------------
# Redis

# _occ_redis_ping URL — the server at URL answers PING (bounded to 5 s).
_occ_redis_ping() {
    local url=$1 _host _port _path reply
    if command -v redis-cli >/dev/null 2>&1; then
        reply=$(timeout 5 redis-cli -u "$url" ping 2>/dev/null) || return 1
        [[ $reply == PONG ]]
        return
    fi
    [[ $url == redis://* ]] || return 1
    _occ_url_parts "$url" 6379
    # No redis-cli: speak the inline protocol over bash's /dev/tcp. A server that wants a password answers
    # -NOAUTH: it is there, and the client authenticates with the credentials in the URL.
    # shellcheck disable=SC2016  # $1/$2 expand in the inner bash
    reply=$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r line <&3 && printf "%s\n" "$line"' _ "$_host" "$_port" 2>/dev/null) || return 1
    [[ $reply == +PONG* || $reply == -NOAUTH* ]]
}

_occ_redis_dir() { printf '%s/redis\n' "$(_occ_run_dir)"; }

# _occ_private_redis_port — the port of the running private Redis, or fail.
_occ_private_redis_port() {
    local dir pid
    dir=$(_occ_redis_dir)
    [[ -f $dir/redis.pid && -f $dir/port ]] || return 1
    pid=$(<"$dir/redis.pid")
    _occ_redis_pid_alive "$pid" || return 1
    cat "$dir/port"
}

_occ_start_private_redis() {
    local port=$1 dir waited=0
    dir=$(_occ_redis_dir)
    if ! command -v redis-server >/dev/null 2>&1; then
        occ_apt_install redis-server
        command -v redis-server >/dev/null 2>&1 || occ_die "redis-server is not on PATH after installing it"
    fi
    if _occ_tcp_open 127.0.0.1 "$port"; then
        occ_die "cannot start a private Redis on 127.0.0.1:$port: the port is taken by something" \
            "that does not answer PING"
    fi
    mkdir -p "$dir" || occ_die "cannot create $dir"
    occ_say "starting a private Redis on 127.0.0.1:$port (data and log in $dir)"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" 9>&- ||
        occ_die "redis-server did not start; see $dir/redis.log"
    printf '%s\n' "$port" >"$dir/port"
    until _occ_redis_ping "redis://127.0.0.1:$port/0"; do
        if ((waited >= OCC_WAIT_S * 5)); then
            tail -n 20 "$dir/redis.log" >&2 2>/dev/null
            occ_die "the private Redis on 127.0.0.1:$port did not answer PING within ${OCC_WAIT_S} s;" \
                "log: $dir/redis.log"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
}

# occ_ensure_redis — exports OCC_REDIS_URL and (unless already set) OCC_TEST_REDIS_URL.
occ_ensure_redis() {
    local url=${OCC_REDIS_URL:-$OCC_DEFAULT_REDIS_URL} explicit=${OCC_REDIS_URL:+1}
    local port running _host _port _path
    if _occ_redis_ping "$url"; then
        occ_say "Redis: using $url"
    else
        _occ_url_parts "$url" 6379
        if [[ -n $explicit ]]; then
            _occ_is_loopback "$_host" ||
                occ_die "Redis at OCC_REDIS_URL=$url does not answer PING" \
                    "(a private Redis is started only for a 127.0.0.1/localhost URL)"
            port=$_port
        else
            port=$OCC_PRIVATE_REDIS_PORT
        fi
        if running=$(_occ_private_redis_port) && _occ_redis_ping "redis://127.0.0.1:$running/0"; then
            if [[ $running != "$port" && -n $explicit ]]; then
                occ_die "OCC_REDIS_URL asks for port $port but the private Redis of $(_occ_run_dir) runs on" \
                    "$running: run 'scripts/services.sh stop' first"
            fi
            port=$running
            occ_say "Redis: $url does not answer; using the private Redis on 127.0.0.1:$port"
        else
            occ_note "Redis: nothing answers at $url"
            _occ_start_private_redis "$port"
        fi
        if [[ -n $explicit ]]; then
            url=${OCC_REDIS_URL}
        else
            url=redis://127.0.0.1:$port/0
        fi
    fi
    export OCC_REDIS_URL=$url
    export OCC_TEST_REDIS_URL=${OCC_TEST_REDIS_URL:-$url}
}

# ---------------------------------------------------------------------------------------------------------
# PostgreSQL

# _occ_pg_admin_url URL — the same server and credentials, database "postgres".
_occ_pg_admin_url() {
    if [[ $1 =~ ^([a-z]+://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
        printf '%s/postgres%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[3]}"
    else
        printf '%s\n' "$1"
    fi
}

# _occ_pg_probe URL — 0: connects; 2: the server answers but the database does not exist; 1: otherwise.
_occ_pg_probe() {
    local url=$1 err _host _port _path
    if command -v psql >/dev/null 2>&1; then
        if err=$(PGCONNECT_TIMEOUT=5 timeout 10 psql -X -q -d "$url" -tAc 'select 1' 2>&1 >/dev/null); then
            return 0
        fi
        [[ $err == *database*"does not exist"* ]] && return 2
        return 1
    fi
    if [[ -x $OCC_VENV/bin/python ]] && "$OCC_VENV/bin/python" -c 'import asyncpg' 2>/dev/null; then
        "$OCC_VENV/bin/python" - "$url" <<'EOF'
import asyncio, sys
import asyncpg

async def main() -> int:
    try:
        conn = await asyncpg.connect(sys.argv[1], timeout=5)
    except asyncpg.InvalidCatalogNameError:
        return 2
    except Exception:
        return 1
    await conn.close()
    return 0

sys.exit(asyncio.run(main()))
EOF
        return
    fi
    # Neither psql nor asyncpg: all that can be checked is that the port is open.
    _occ_url_parts "$url" 5432
    _occ_tcp_open "${_host:-127.0.0.1}" "$_port"
}

# _occ_pg_create_db URL — create URL's database through the server's "postgres" database.
_occ_pg_create_db() {
    local url=$1 admin _host _port _path
    _occ_url_parts "$url" 5432
    [[ -n $_path && $_path =~ ^[A-Za-z0-9_]+$ ]] || return 1
    command -v psql >/dev/null 2>&1 || return 1
    admin=$(_occ_pg_admin_url "$url")
    PGCONNECT_TIMEOUT=5 timeout 30 psql -X -q -v ON_ERROR_STOP=1 -d "$admin" \
        -c "CREATE DATABASE \"$_path\"" >/dev/null
}

_occ_pg_bindir() {
    local dir
    # Debian's layout: /usr/lib/postgresql/VERSION/bin; the newest version wins.
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]]; then
        printf '%s\n' "$dir"
    elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
    else
        return 1
    fi
}

# The private cluster's directory, run/pg, or where run/pg links to (see _occ_pg_prepare_dir).
_occ_pg_dir() {
    local dir
    dir=$(_occ_run_dir)/pg
    if [[ -L $dir ]]; then
        readlink "$dir"
    else
        printf '%s\n' "$dir"
    fi
}

# _occ_as_pg_owner CMD... — run CMD as the cluster's owner: `postgres` when we are root, else ourselves.
# Runs from / so that a working directory the owner cannot enter draws no warnings; every path is absolute.
_occ_as_pg_owner() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# _occ_private_pg_port — the port of the running private PostgreSQL, or fail.
_occ_private_pg_port() {
    local dir bindir
    dir=$(_occ_pg_dir)
    [[ -f $dir/data/postmaster.pid ]] || return 1
    bindir=$(_occ_pg_bindir) || return 1
    _occ_as_pg_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 || return 1
    sed -n 4p "$dir/data/postmaster.pid"
}

# _occ_pg_prepare_dir DIR — make DIR (run/pg, resolved) a directory the cluster owner can write. When the
# owner cannot reach the project's run directory (a checkout under /root, say), the cluster lives in
# /var/tmp/occ-pg-* instead and run/pg is a symbolic link to it.
_occ_pg_prepare_dir() {
    local dir=$1 outside
    mkdir -p "$dir" || occ_die "cannot create $dir"
    [[ $EUID -eq 0 ]] || return 0
    { chown postgres: "$dir" && chmod 700 "$dir"; } || occ_die "cannot give $dir to the postgres user"
    runuser -u postgres -- test -w "$dir/." 2>/dev/null && return 0
    outside=/var/tmp/occ-pg-$(printf '%s' "$dir" | sha256sum | cut -c1-12)
    occ_note "the postgres user cannot reach $dir; the cluster goes to $outside (linked from $dir)"
    rm -f "$dir/initdb.log"
    rmdir "$dir" 2>/dev/null || occ_die "$dir is not empty and the postgres user cannot reach it"
    { mkdir -p "$outside" && chown postgres: "$outside" && chmod 700 "$outside"; } ||
        occ_die "cannot create $outside"
    ln -s "$outside" "$dir" || occ_die "cannot link $dir to $outside"
}

_occ_start_private_pg() {
    local port=$1 dir bindir socket_dirs data log waited=0
    dir=$(_occ_pg_dir)
    if ! bindir=$(_occ_pg_bindir); then
        occ_apt_install postgresql
        bindir=$(_occ_pg_bindir) ||
            occ_die "initdb/pg_ctl not found under /usr/lib/postgresql/*/bin after installing postgresql"
    fi
    if [[ $EUID -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
        occ_die "a private PostgreSQL must not run as root, and there is no 'postgres' user" \
            "(the Debian package creates it: apt-get install postgresql)"
    fi
    if _occ_tcp_open 127.0.0.1 "$port"; then
        occ_die "cannot start a private PostgreSQL on 127.0.0.1:$port: the port is taken"
    fi
    _occ_pg_prepare_dir "$dir"
    dir=$(_occ_pg_dir)
    data=$dir/data
    log=$dir/postgres.log
    if [[ ! -f $data/PG_VERSION ]]; then
        occ_say "creating a private PostgreSQL cluster in $data"
        rm -rf "$data"
        _occ_as_pg_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
            >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            occ_die "initdb failed (log above, also in $dir/initdb.log)"
        }
        # Unix sockets go inside the cluster's own directory when the path fits the 107-byte limit.
        socket_dirs=$(readlink -f "$dir")
        ((${#socket_dirs} + 20 < 107)) || socket_dirs=
        # A throw-away development cluster: listen on loopback only, and trade durability for speed.
        _occ_as_pg_owner tee -a "$data/postgresql.conf" >/dev/null <<EOF

# Added by scripts/services.sh: private development cluster.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$socket_dirs'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
    occ_say "starting a private PostgreSQL on 127.0.0.1:$port (data in $data, log in $log)"
    _occ_as_pg_owner "$bindir/pg_ctl" -D "$data" -l "$log" -o "-p $port" -w -t "$OCC_WAIT_S" start \
        >/dev/null 9>&- || {
        tail -n 20 "$log" >&2 2>/dev/null
        occ_die "the private PostgreSQL did not start within ${OCC_WAIT_S} s; log: $log"
    }
    until _occ_pg_probe "postgresql://postgres@127.0.0.1:$port/postgres"; do
        if ((waited >= OCC_WAIT_S * 5)); then
            occ_die "the private PostgreSQL on 127.0.0.1:$port does not accept connections; log: $log"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
}

# occ_ensure_postgres — exports OCC_DATABASE_URL and (unless already set) OCC_TEST_DATABASE_URL (the admin
# DSN of the same server: database "postgres", where the tests create their throw-away databases).
occ_ensure_postgres() {
    local url=${OCC_DATABASE_URL:-$OCC_DEFAULT_DATABASE_URL} explicit=${OCC_DATABASE_URL:+1}
    local port running user database rc=0 _host _port _path
    _occ_pg_probe "$url" || rc=$?
    if ((rc == 2)) && _occ_pg_create_db "$url"; then
        occ_note "PostgreSQL: created the database of $url"
        rc=0
    fi
    if ((rc == 0)); then
        occ_say "PostgreSQL: using $url"
    else
        _occ_url_parts "$url" 5432
        if [[ -n $explicit ]]; then
            _occ_is_loopback "$_host" ||
                occ_die "PostgreSQL at OCC_DATABASE_URL=$url does not accept connections" \
                    "(a private PostgreSQL is started only for a 127.0.0.1/localhost URL)"
            port=$_port
            database=${_path:-occ}
            user=$(printf '%s' "${url#*://}" | sed -n 's/^\([^:@/]*\)[^@/]*@.*/\1/p')
        else
            port=$OCC_PRIVATE_PG_PORT
            database=occ
        fi
        user=${user:-postgres}
        [[ $database =~ ^[A-Za-z0-9_]+$ ]] ||
            occ_die "database name '$database' in $url: use letters, digits and _"
        [[ $user =~ ^[A-Za-z0-9_]+$ ]] || occ_die "user name '$user' in $url: use letters, digits and _"
        if running=$(_occ_private_pg_port) &&
            _occ_pg_probe "postgresql://postgres@127.0.0.1:$running/postgres"; then
            if [[ $running != "$port" && -n $explicit ]]; then
                occ_die "OCC_DATABASE_URL asks for port $port but the private PostgreSQL of $(_occ_run_dir)" \
                    "runs on $running: run 'scripts/services.sh stop' first"
            fi
            port=$running
            occ_say "PostgreSQL: $url does not answer; using the private PostgreSQL on 127.0.0.1:$port"
        else
            occ_note "PostgreSQL: cannot connect to $url"
            _occ_start_private_pg "$port"
        fi
        if [[ $user != postgres ]]; then
            # The private cluster's superuser is postgres; the URL's user becomes another one.
            PGCONNECT_TIMEOUT=5 timeout 30 psql -X -q -v ON_ERROR_STOP=1 \
                -d "postgresql://postgres@127.0.0.1:$port/postgres" -c "DO \$\$ BEGIN
                    CREATE ROLE \"$user\" LOGIN SUPERUSER;
                    EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >/dev/null ||
                occ_die "cannot create the role $user in the private PostgreSQL"
        fi
        url=postgresql://$user@127.0.0.1:$port/$database
        rc=0
        _occ_pg_probe "$url" || rc=$?
        if ((rc == 2)); then
            _occ_pg_create_db "$url" || occ_die "cannot create the database $database on 127.0.0.1:$port"
        elif ((rc != 0)); then
            occ_die "cannot connect to the private PostgreSQL at $url; log: $(_occ_pg_dir)/postgres.log"
        fi
    fi
    export OCC_DATABASE_URL=$url
    export OCC_TEST_DATABASE_URL=${OCC_TEST_DATABASE_URL:-$(_occ_pg_admin_url "$url")}
}

# ---------------------------------------------------------------------------------------------------------

# occ_ensure_services — Redis and PostgreSQL, once per process tree (children inherit the exported URLs).
occ_ensure_services() {
    [[ ${OCC_SERVICES_READY:-} == 1 ]] && return 0
    local run_dir
    run_dir=$(_occ_run_dir)
    mkdir -p "$run_dir" || occ_die "cannot create the run directory $run_dir"
    # Two scripts starting at once must not both start a private instance. (The servers are started with
    # fd 9 closed, so they never hold the lock.)
    exec 9>"$run_dir/.services.lock"
    flock -w $((OCC_WAIT_S * 3)) 9 || occ_die "another script holds $run_dir/.services.lock"
    occ_ensure_redis
    occ_ensure_postgres
    flock -u 9
    exec 9>&-
    export OCC_SERVICES_READY=1
}

# occ_stop_services — stop the private instances of the run directory (never anything else).
occ_stop_services() {
    local dir pid bindir waited=0
    dir=$(_occ_redis_dir)
    if [[ -f $dir/redis.pid ]]; then
        pid=$(<"$dir/redis.pid")
        if _occ_redis_pid_alive "$pid"; then
            occ_say "stopping the private Redis (pid $pid)"
            kill "$pid"
            while _occ_pid_alive "$pid" && ((waited < OCC_WAIT_S * 5)); do
                sleep 0.2
                waited=$((waited + 1))
            done
            ! _occ_pid_alive "$pid" ||
                occ_die "the private Redis (pid $pid) did not stop within ${OCC_WAIT_S} s"
        fi
        rm -f "$dir/redis.pid" "$dir/port"
    fi
    dir=$(_occ_pg_dir)
    if [[ -f $dir/data/postmaster.pid ]] && bindir=$(_occ_pg_bindir); then
        if _occ_as_pg_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
            occ_say "stopping the private PostgreSQL ($dir/data)"
            _occ_as_pg_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t "$OCC_WAIT_S" stop >/dev/null ||
                occ_die "the private PostgreSQL did not stop within ${OCC_WAIT_S} s"
        fi
    fi
}

# occ_clean_services — stop the private instances and delete their data (run/redis, run/pg and, when run/pg
# is a link, the directory it points to).
occ_clean_services() {
    local run_dir
    run_dir=$(_occ_run_dir)
    occ_stop_services
    if [[ -L $run_dir/pg ]]; then
        rm -rf "$(readlink "$run_dir/pg")"
    fi
    rm -rf "$run_dir/pg" "$run_dir/redis" "$run_dir/.services.lock"
    occ_say "deleted the private Redis and PostgreSQL data under $run_dir"
}

occ_services_status() {
    local port
    if port=$(_occ_private_redis_port); then
        echo "private Redis:      running on 127.0.0.1:$port ($(_occ_redis_dir))"
    else
        echo "private Redis:      not running"
    fi
    if port=$(_occ_private_pg_port); then
        echo "private PostgreSQL: running on 127.0.0.1:$port ($(_occ_pg_dir))"
    else
        echo "private PostgreSQL: not running"
    fi
}

_occ_services_main() {
    set -euo pipefail
    case ${1:-} in
    start)
        occ_ensure_services
        echo "OCC_REDIS_URL=$OCC_REDIS_URL"
        echo "OCC_DATABASE_URL=$OCC_DATABASE_URL"
        ;;
    env)
        # Quiet: only the export lines, for eval.
        occ_ensure_services >/dev/null
        printf 'export %s=%q\n' OCC_REDIS_URL "$OCC_REDIS_URL" OCC_TEST_REDIS_URL "$OCC_TEST_REDIS_URL" \
            OCC_DATABASE_URL "$OCC_DATABASE_URL" OCC_TEST_DATABASE_URL "$OCC_TEST_DATABASE_URL"
        ;;
    stop) occ_stop_services ;;
    clean) occ_clean_services ;;
    status) occ_services_status ;;
    *)
        echo "usage: scripts/services.sh start|stop|clean|status|env" >&2
        echo "  start   use the configured Redis/PostgreSQL, or start private ones under run/" >&2
        echo "  stop    stop the private instances (their data stays for the next start)" >&2
        echo "  clean   stop them and delete their data" >&2
        echo "  status  show whether private instances are running" >&2
        echo "  env     print export lines for the services: eval \"\$(scripts/services.sh env)\"" >&2
        exit 2
        ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    _occ_services_main "$@"
fi
