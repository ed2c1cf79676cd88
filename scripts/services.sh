#!/usr/bin/env bash
# Make a PostgreSQL server reachable for Triad's tests.
#
# Usage:  eval "$(scripts/services.sh)"
#
# On success prints `export TRIAD_TEST_DATABASE_URL='postgres://...'` on stdout
# and exits 0; every diagnostic goes to stderr. On failure exits 1.
#
# Order of attempts:
#   a. $TRIAD_TEST_DATABASE_URL, if set and answering;
#   b. the default local server ($TRIAD_SERVICES_DEFAULT_URL,
#      default postgres://postgres@127.0.0.1:5432/postgres);
#   c. as root with apt-get: install PostgreSQL if absent, start the distro
#      cluster, allow trust auth for postgres on 127.0.0.1, re-check (b);
#   d. a throwaway cluster in target/pg-throwaway/ on a free port (reused if
#      already running). Stop it with:
#        pg_ctl -D target/pg-throwaway/data stop   (as its owner when root)
#
# Then, as root with apt-get, tries to install PostGIS for the server's major
# version if the extension is not available, and Debian's chromium for the web
# console's browser tests (failures are only warnings: without a browser those
# tests skip with a loud message).
#
# Knobs (mostly for testing this script):
#   TRIAD_SERVICES_DEFAULT_URL  URL tried in (b)
#   TRIAD_SERVICES_NO_APT=1     never run apt-get (skips the install parts of c and PostGIS)
#   TRIAD_SERVICES_BASE_PORT    first port probed for the throwaway cluster (55432)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_URL="${TRIAD_SERVICES_DEFAULT_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
THROWAWAY_DIR="$REPO_ROOT/target/pg-throwaway"
BASE_PORT="${TRIAD_SERVICES_BASE_PORT:-55432}"
APT_UPDATED=0

export DEBIAN_FRONTEND=noninteractive
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-3}"

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

can_apt() {
    is_root && command -v apt-get >/dev/null 2>&1 && [ "${TRIAD_SERVICES_NO_APT:-0}" != "1" ]
}

apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -q || log "WARNING: apt-get update failed"
        APT_UPDATED=1
    fi
}

# apt_install PKG... : install, running `apt-get update` first only if needed.
apt_install() {
    if apt-get install -y -q --no-install-recommends "$@"; then
        return 0
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt_update_once
        apt-get install -y -q --no-install-recommends "$@"
    else
        return 1
    fi
}

# pg_answers URL : true if `select 1` succeeds on URL.
pg_answers() {
    local out
    out="$(psql -X -w -q "$1" -Atc 'select 1' 2>/dev/null)" || return 1
    [ "$out" = "1" ]
}

# wait_for URL SECONDS
wait_for() {
    local url="$1" tries=$(($2 * 4))
    while [ "$tries" -gt 0 ]; do
        pg_answers "$url" && return 0
        sleep 0.25
        tries=$((tries - 1))
    done
    return 1
}

RESULT_URL=""
# found URL : remember URL as the answer (callers then `return 0`).
found() { RESULT_URL="$1"; }

is_local_url() {
    [[ "$1" =~ ^postgres(ql)?://([^@/]*@)?(127\.0\.0\.1|localhost|\[::1\])?([:/?]|$) ]]
}

ensure_postgis() {
    local url="$1" have ver major
    have="$(psql -X -w -q "$url" -Atc "select 1 from pg_available_extensions where name='postgis'" 2>/dev/null || true)"
    [ "$have" = "1" ] && return 0
    if ! can_apt || ! is_local_url "$url"; then
        log "note: PostGIS extension not available on this server (only needed by GIS features)"
        return 0
    fi
    ver="$(psql -X -w -q "$url" -Atc 'show server_version_num' 2>/dev/null || true)"
    if ! [[ "$ver" =~ ^[0-9]+$ ]]; then
        log "WARNING: could not read server_version_num; not installing PostGIS"
        return 0
    fi
    major=$((ver / 10000))
    # Remember a failed install so that later runs stay fast (delete to retry).
    local marker="$REPO_ROOT/target/.services-postgis-failed-$major"
    if [ -e "$marker" ]; then
        log "note: PostGIS not available (install failed before; rm $marker to retry)"
        return 0
    fi
    log "PostGIS not available; installing postgresql-$major-postgis-3"
    if apt_install "postgresql-$major-postgis-3"; then
        log "installed postgresql-$major-postgis-3"
    else
        log "WARNING: could not install postgresql-$major-postgis-3; PostGIS features will be unavailable"
        { mkdir -p "$REPO_ROOT/target" && : >"$marker"; } || true
    fi
    return 0
}

ensure_browser() {
    if [ -n "${TRIAD_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ] || [ -x /usr/bin/chromium-browser ]; then
        return 0
    fi
    if ! can_apt; then
        log "note: no chromium; the web console's browser tests will be skipped"
        return 0
    fi
    # Remember a failed install so that later runs stay fast (delete to retry).
    local marker="$REPO_ROOT/target/.services-chromium-failed"
    if [ -e "$marker" ]; then
        log "note: chromium not available (install failed before; rm $marker to retry)"
        return 0
    fi
    log "installing chromium for the web console's browser tests"
    if apt_install chromium fonts-dejavu-core; then
        log "installed chromium"
    else
        log "WARNING: could not install chromium; the web console's browser tests will be skipped"
        { mkdir -p "$REPO_ROOT/target" && : >"$marker"; } || true
    fi
    return 0
}

pg_server_installed() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# ---------------------------------------------------------------- path (c)
ensure_hba_trust() {
    local hba="$1"
    [ -f "$hba" ] || return 1
    if grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+postgres[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        return 1 # already there: nothing changed
    fi
    log "adding 'host all postgres 127.0.0.1/32 trust' to $hba"
    local tmp
    tmp="$(mktemp)"
    {
        echo '# added by triad scripts/services.sh: passwordless local access for tests'
        echo 'host all postgres 127.0.0.1/32 trust'
        cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba" # keep owner and mode of the original file
    rm -f "$tmp"
    return 0
}

try_distro_cluster() {
    can_apt || return 1
    if ! pg_server_installed; then
        log "no PostgreSQL server installed; installing from apt"
        apt_update_once
        if ! apt-get install -y -q postgresql; then
            log "WARNING: apt-get install postgresql failed"
            return 1
        fi
        # PostGIS for the packaged version; failure is not fatal.
        apt-get install -y -q postgresql-15-postgis-3 ||
            log "WARNING: apt-get install postgresql-15-postgis-3 failed (PostGIS is optional)"
    fi
    local ver
    # shellcheck disable=SC2012 # version directory names only
    ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
    if [ -z "$ver" ]; then
        # shellcheck disable=SC2012
        ver="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)"
    fi
    [ -n "$ver" ] || return 1
    if [ ! -d "/etc/postgresql/$ver/main" ] && command -v pg_createcluster >/dev/null 2>&1; then
        log "creating cluster $ver/main"
        pg_createcluster "$ver" main || true
    fi
    [ -d "/etc/postgresql/$ver/main" ] || return 1

    log "starting distro cluster $ver/main"
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>&1 || true
    fi
    if ! pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main" && $4 == "online"' | grep -c . >/dev/null; then
        service postgresql start 2>&1 || true
    fi

    # The cluster may listen on a port other than 5432.
    local port url
    port="$( (pg_lsclusters -h 2>/dev/null || true) | awk -v v="$ver" '$1 == v && $2 == "main" {print $3}')"
    port="${port:-5432}"
    url="postgres://postgres@127.0.0.1:$port/postgres"
    # Wait until the server accepts connections at all (auth aside).
    local tries=40
    while [ "$tries" -gt 0 ] && ! pg_isready -q -h 127.0.0.1 -p "$port" >/dev/null 2>&1; do
        sleep 0.25
        tries=$((tries - 1))
    done
    pg_answers "$DEFAULT_URL" && found "$DEFAULT_URL" && return 0
    pg_answers "$url" && found "$url" && return 0

    # Running but refusing us: allow trust for postgres over 127.0.0.1.
    if ensure_hba_trust "/etc/postgresql/$ver/main/pg_hba.conf"; then
        pg_ctlcluster --skip-systemctl-redirect "$ver" main reload 2>&1 || service postgresql reload 2>&1 || true
        sleep 0.5
        wait_for "$DEFAULT_URL" 3 && found "$DEFAULT_URL" && return 0
        pg_answers "$url" && found "$url" && return 0
    fi
    log "distro cluster $ver/main did not answer"
    return 1
}

# ---------------------------------------------------------------- path (d)
find_pg_bindir() {
    local d
    # shellcheck disable=SC2012 # version directory names only
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
        echo "$d"
        return 0
    fi
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    fi
    d="$(command -v initdb 2>/dev/null || true)"
    if [ -n "$d" ] && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$d")"
        return 0
    fi
    return 1
}

port_in_use() {
    # Something accepts connections on 127.0.0.1:$1?
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local p="$BASE_PORT" last=$((BASE_PORT + 200))
    while [ "$p" -le "$last" ]; do
        if ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
        p=$((p + 1))
    done
    return 1
}

# as_owner CMD... : run CMD as the cluster's owner ($RUN_USER, empty = ourselves).
RUN_USER=""
as_owner() {
    if [ -n "$RUN_USER" ]; then
        runuser -u "$RUN_USER" -- "$@"
    else
        "$@"
    fi
}

start_throwaway() {
    local bindir dir data sockdir conf port url pidport sock_conf
    bindir="$(find_pg_bindir)" || die "no PostgreSQL server binaries found (initdb/pg_ctl); install postgresql"
    log "using PostgreSQL binaries in $bindir"

    if is_root; then
        if id -u postgres >/dev/null 2>&1; then
            RUN_USER=postgres
        else
            RUN_USER=nobody
        fi
        command -v runuser >/dev/null 2>&1 || die "running as root but runuser is missing"
    fi

    mkdir -p "$REPO_ROOT/target"
    dir="$THROWAWAY_DIR"
    if [ -n "$RUN_USER" ] && [ ! -e "$dir" ] && ! runuser -u "$RUN_USER" -- test -x "$REPO_ROOT/target"; then
        # The repo sits where $RUN_USER cannot reach (e.g. under /root): keep the
        # cluster in /tmp and point target/pg-throwaway at it.
        local alt
        alt="${TMPDIR:-/tmp}/triad-pg-throwaway-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)"
        log "$RUN_USER cannot reach $REPO_ROOT/target; keeping the cluster in $alt"
        mkdir -p "$alt"
        ln -sfn "$alt" "$dir"
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
    data="$dir/data"
    sockdir="$dir/sock"
    conf="$data/triad.conf"
    mkdir -p "$sockdir"
    if [ -n "$RUN_USER" ]; then
        chown "$RUN_USER" "$dir" "$sockdir"
        [ -e "$dir/postgres.log" ] && chown "$RUN_USER" "$dir/postgres.log"
        [ -d "$data" ] && chown -R "$RUN_USER" "$data"
    fi

    # Already running? Reuse it.
    if [ -f "$data/postmaster.pid" ] && as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        pidport="$(sed -n 4p "$data/postmaster.pid")"
        url="postgres://postgres@127.0.0.1:$pidport/postgres"
        if wait_for "$url" 5; then
            log "reusing throwaway cluster in $dir (port $pidport)"
            found "$url"
            return 0
        fi
        log "throwaway cluster in $dir runs but does not answer; restarting it"
        as_owner "$bindir/pg_ctl" -D "$data" -m fast -w stop || true
    fi

    if [ ! -f "$data/PG_VERSION" ]; then
        rm -rf "$data"
        log "initdb $data"
        as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null ||
            die "initdb failed"
        echo "include_if_exists = 'triad.conf'" >>"$data/postgresql.conf"
    fi

    port="$(pick_port)" || die "no free TCP port in $BASE_PORT..$((BASE_PORT + 200))"
    # A unix socket path must stay under ~107 bytes; disable the socket if ours would not.
    sock_conf="$sockdir"
    if [ "$(printf '%s/.s.PGSQL.%s' "$sockdir" "$port" | wc -c)" -gt 100 ]; then
        log "socket path too long; the throwaway cluster listens on TCP only"
        sock_conf=""
    fi
    cat >"$conf" <<EOF
# written by scripts/services.sh on each start
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock_conf'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    [ -n "$RUN_USER" ] && chown "$RUN_USER" "$conf"

    log "starting throwaway cluster in $dir on 127.0.0.1:$port"
    if ! as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start >/dev/null; then
        tail -n 20 "$dir/postgres.log" >&2 || true
        die "could not start the throwaway cluster (log: $dir/postgres.log)"
    fi
    url="postgres://postgres@127.0.0.1:$port/postgres"
    wait_for "$url" 15 || die "throwaway cluster started but does not answer on $url"
    found "$url"
}

# ---------------------------------------------------------------- main
find_server() {
    command -v psql >/dev/null 2>&1 || {
        if can_apt; then
            log "psql missing; installing postgresql-client"
            apt_install postgresql-client || die "could not install postgresql-client"
        else
            die "psql not found; install the PostgreSQL client"
        fi
    }

    # (a)
    if [ -n "${TRIAD_TEST_DATABASE_URL:-}" ]; then
        pg_answers "$TRIAD_TEST_DATABASE_URL" && found "$TRIAD_TEST_DATABASE_URL" && return 0
        log "TRIAD_TEST_DATABASE_URL is set but does not answer; trying others"
    fi

    # (b)
    pg_answers "$DEFAULT_URL" && found "$DEFAULT_URL" && return 0

    # (c)
    if can_apt; then
        try_distro_cluster && return 0
        log "could not use the distro cluster; falling back to a throwaway cluster"
    fi

    # (d)
    start_throwaway
}

main() {
    find_server
    [ -n "$RESULT_URL" ] || die "no PostgreSQL server found"
    ensure_postgis "$RESULT_URL"
    ensure_browser
}

# Run everything with stdout sent to stderr: apt-get, pg_ctl etc. print there,
# and no child (notably the postgres daemon) inherits the caller's stdout, so
# `$(scripts/services.sh)` returns as soon as this script exits.
main >&2
printf "export TRIAD_TEST_DATABASE_URL='%s'\n" "${RESULT_URL//\'/\'\\\'\'}"
