#!/usr/bin/env bash
# HTTP benchmark of latchkey against the original Flask design and a bare tiny_http floor.
#
# The floor is STOCK tiny_http 0.12 from crates.io (benches/floor, its own crate and lock
# file, no [patch]), answering a fixed page with the same number of workers; the patched
# copy latchkey runs on is measured beside it as examples/bare.rs in raw mode.
#
# Usage: benches/http.sh            the whole comparison (about 12 minutes at the defaults)
#        benches/http.sh floor      latchkey against the floors and the idle-connection
#                                   report only (about 4 minutes)
#        benches/http.sh idle       threads, descriptors and RSS with 1,000 and 5,000 idle
#                                   connections and after they close, latchkey and the floor
#        benches/http.sh profiles   binary size and /auth speed per release profile variant
#                                   (opt-level 3/s/z x panic unwind/abort; rebuilds 6 times)
#        benches/http.sh instructions   instructions per request under callgrind (repeatable
#                                   on a noisy host), from a build with debug info
#        benches/http.sh postgres   the PostgreSQL store (a release build with --features
#                                   postgres in target/postgres, a throwaway PostgreSQL server
#                                   started as the postgres user): /auth and /account against
#                                   the floor, and logins/s with the redb and PostgreSQL stores
#                                   (about 5 minutes)
#
# Everything runs on loopback with `wrk` (Debian package `wrk`). Each case is measured
# REPS times (interleaved with the other cases of the same server) and the MEDIAN of
# requests/s, p50 and p99 is reported, each metric's median taken separately.
#
# Settings (environment):
#   DURATION=10s THREADS=2 CONNS=16 REPS=3   wrk settings, as in the Flask README's figures
#   WORKERS=2                                worker threads of latchkey and of the floor
#   LOGIN_DURATION=5s                        each back-to-back login run (one client)
#   FLASK_SEED_DIR=../shared/peers/flask_seed  (relative to the repository root; the Flask
#                                            case is skipped when it or gunicorn is missing)
#   OUT=target/bench/http.md                 where the Markdown table is also written
#   QUIET_BUDGET=30                          seconds the script may spend in total waiting
#                                            for the machine to be quiet before runs
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-16}
REPS=${REPS:-3}
WORKERS=${WORKERS:-2}
LOGIN_DURATION=${LOGIN_DURATION:-5s}
FLASK_SEED_DIR=${FLASK_SEED_DIR:-../shared/peers/flask_seed}
OUT=${OUT:-target/bench/http.md}
QUIET_BUDGET=${QUIET_BUDGET:-30}
MODE=${1:-all}

BIN=$ROOT/target/release/latchkey
BARE=$ROOT/target/release/examples/bare
FLOOR=$ROOT/target/floor/release/floor
PASSWORD=bench-password-1234
TMP=$(mktemp -d -t latchkey-bench.XXXXXX)
RESULTS=$TMP/results.tsv   # key, rps, p50 ms, p99 ms, errors, others' CPU %, server CPU us/req
HZ=$(getconf CLK_TCK)
: >"$RESULTS"
PIDS=()
SERVER_PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }
die() { say "http.sh: $*"; exit 1; }

command -v wrk >/dev/null || die "wrk is not installed (Debian package wrk)"
command -v curl >/dev/null || die "curl is not installed"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # URL: waits until something answers
    for _ in $(seq 1 300); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    die "nothing answers at $1"
}

expect_status() { # WANT URL [curl args]: checks one answer before measuring it
    local want=$1 url=$2; shift 2
    local got
    got=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")
    [ "$got" = "$want" ] || die "$url answered $got, expected $want"
}

kib() { awk '/^'"$1"':/ {print $2}' "/proc/$2/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Parses one wrk --latency output on stdin into "rps p50_ms p99_ms errors requests".
parse_wrk() {
    awk '
    function ms(v) {
        if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
        if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
        if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
        return v + 0
    }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { n = $1 }
    /Non-2xx or 3xx responses:/ { bad += $NF }
    /Socket errors:/ { gsub(/,/, ""); bad += $4 + $6 + $8 + $10 }
    END { printf "%s %.3f %.3f %d %d\n", rps, p50, p99, bad, n }'
}

# The machine is shared: each run also records how much of the CPU other processes took
# while it ran (all busy time minus the servers' and wrk's own), and before each run the
# script waits (within QUIET_BUDGET seconds in total) for a moment of quiet.
cpu_sample() { awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat; }
server_ticks() {
    local sum=0 pid
    for pid in "${SERVER_PIDS[@]}"; do
        [ -r "/proc/$pid/stat" ] && sum=$((sum + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$sum"
}
child_ticks() { # CPU of the waited-for children of this shell (wrk), in ticks
    times >"$TMP/times"
    awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d", t * 100 }' "$TMP/times"
}
QUIET_SPENT=0
wait_quiet() {
    local tries=0 a b busy
    while [ "$QUIET_SPENT" -lt "$QUIET_BUDGET" ] && [ "$tries" -lt 10 ]; do
        a=$(cpu_sample); sleep 0.5; b=$(cpu_sample)
        busy=$(awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%d", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }')
        [ "$busy" -lt 25 ] && return 0
        tries=$((tries + 1))
        QUIET_SPENT=$((QUIET_SPENT + 1))
        sleep 0.5
    done
}

run_wrk() { # KEY URL [wrk args]: one measurement appended to RESULTS
    local key=$1 url=$2; shift 2
    local out c0 c1 s0 s1 w0 w1 others
    # When several servers run side by side, only this case's server is accounted.
    [ -n "${CASE_PID[$key]:-}" ] && SERVER_PIDS=("${CASE_PID[$key]}")
    wait_quiet
    c0=$(cpu_sample); s0=$(server_ticks); w0=$(child_ticks)
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url")
    c1=$(cpu_sample); s1=$(server_ticks); w1=$(child_ticks)
    others=$(awk -v a="$c0" -v b="$c1" -v s=$((s1 - s0)) -v w=$((w1 - w0)) 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
        o = t > 0 ? 100 * (y[1] - x[1] - s - w) / t : 0; printf "%d", o < 0 ? 0 : o }')
    read -r rps p50 p99 bad n < <(parse_wrk <<<"$out")
    local cpu
    cpu=$(awk -v t=$((s1 - s0)) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$rps" "$p50" "$p99" "$bad" "$others" "$cpu" >>"$RESULTS"
    say "  $key: $rps req/s, p50 $p50 ms, p99 $p99 ms, errors $bad, server ${cpu} us CPU/request, others took ${others}% CPU"
}

warm() { wrk -t1 -c4 -d1s "$@" >/dev/null; }

median() { # KEY COLUMN (2 rps, 3 p50, 4 p99, 5 errors, 6 others' CPU %, 7 server CPU us/request)
    awk -F'\t' -v k="$1" -v c="$2" '$1 == k { print $c }' "$RESULTS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Measures every "KEY URL [wrk args]" case of one server REPS times, interleaved.
measure_cases() {
    local -n cases=$1
    local spec
    for spec in "${cases[@]}"; do
        eval "warm $(cut -d' ' -f2- <<<"$spec")"
    done
    for rep in $(seq 1 "$REPS"); do
        say " round $rep/$REPS"
        for spec in "${cases[@]}"; do
            eval "run_wrk $spec"
        done
    done
}

build() {
    say "== building (cargo build --release --bin latchkey --example bare; the stock floor)"
    cargo build --release --bin latchkey --example bare >&2
    cargo build --release --locked --manifest-path benches/floor/Cargo.toml --target-dir target/floor >&2
}

# --- latchkey ------------------------------------------------------------------------

DATA=$TMP/data
LK_PORT=
LK_PID=

start_latchkey() { # WORKERS LOG: starts latchkey on DATA; LK_PID, LK_URL
    local workers=$1 log=$2 errlog=/dev/null
    [ "$log" = off ] || errlog=$TMP/latchkey-$log.log
    LK_PORT=$(free_port)
    LK_URL=http://127.0.0.1:$LK_PORT
    LATCHKEY_WORKERS=$workers LATCHKEY_LOG=$log \
        "$BIN" serve --data-dir "$DATA" --listen "127.0.0.1:$LK_PORT" 2>"$errlog" &
    LK_PID=$!
    PIDS+=("$LK_PID")
    wait_http "$LK_URL/healthz"
    sleep 0.5
}

stop() { # PID: one server this script started
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
    PIDS=("${keep[@]}")
}

setup_latchkey() {
    mkdir -p "$DATA"
    echo "$PASSWORD" | "$BIN" user add bench --data-dir "$DATA" >&2
    # Log in through the API on a first instance (it generates the key in DATA). A login
    # hashes with argon2id (19 MiB), which would dominate the peak RSS of the token-only
    # runs, so those run on fresh instances with the same key and the token got here.
    start_latchkey "$WORKERS" off
    local reply
    reply=$(curl -s -X POST -H 'Content-Type: application/json' \
        -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" "$LK_URL/api/login")
    TOKEN=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$reply")
    [ -n "$TOKEN" ] || die "login failed: $reply"
    # A browser also holds the CSRF cookie after its first page; send it back like one.
    CSRF=$(curl -s -o /dev/null -D - -H "Cookie: token=$TOKEN" "$LK_URL/account" |
        sed -n 's/^Set-Cookie: csrf=\([^;]*\);.*/\1/Ip' | tr -d '\r')
    [ -n "$CSRF" ] || die "no CSRF cookie on /account"
    COOKIE="token=$TOKEN; csrf=$CSRF"
    stop "$LK_PID"
}

latchkey_cases() { # PREFIX: the four routes
    local p=$1
    LK_CASES=(
        "$p.anon $LK_URL/"
        "$p.account $LK_URL/account -H 'Cookie: $COOKIE'"
        "$p.auth $LK_URL/auth -H 'Cookie: $COOKIE'"
        "$p.garbage $LK_URL/ -H 'Cookie: token=garbage.not.jwt'"
    )
    expect_status 200 "$LK_URL/"
    expect_status 200 "$LK_URL/account" -H "Cookie: $COOKIE"
    expect_status 200 "$LK_URL/auth" -H "Cookie: $COOKIE"
    expect_status 303 "$LK_URL/" -H "Cookie: token=garbage.not.jwt"
}

bench_latchkey() { # LOG
    local log=$1
    say "== latchkey, $WORKERS workers, LATCHKEY_LOG=$log"
    start_latchkey "$WORKERS" "$log"
    IDLE[lk.$log]=$(kib VmRSS "$LK_PID")
    SERVER_PIDS=("$LK_PID")
    latchkey_cases "lk.$log"
    local case
    for case in anon account auth garbage; do CASE_PID[lk.$log.$case]=$LK_PID; done
    if [ "$log" = off ]; then
        # The floors run beside latchkey and take turns with it in every round, so the
        # ratios compare runs made moments apart rather than minutes apart.
        start_bare "$WORKERS" stock
        IDLE[bare]=$(kib VmRSS "$BARE_PID")
        local stock_pid=$BARE_PID stock_url=$BARE_URL
        start_bare "$WORKERS" raw
        IDLE[bare.raw]=$(kib VmRSS "$BARE_PID")
        CASE_PID[bare]=$stock_pid
        CASE_PID[bare.cookie]=$stock_pid
        CASE_PID[bare.raw]=$BARE_PID
        # The floor also gets the authenticated requests' Cookie header, which costs
        # even a bare server to read.
        LK_CASES=(
            "bare $stock_url/"
            "bare.cookie $stock_url/ -H 'Cookie: $COOKIE'"
            "bare.raw $BARE_URL/ -H 'Cookie: $COOKIE'"
            "${LK_CASES[@]}"
        )
    fi
    measure_cases LK_CASES
    PEAK[lk.$log]=$(kib VmHWM "$LK_PID")
    stop "$LK_PID"
    if [ "$log" = off ]; then
        PEAK[bare]=$(kib VmHWM "${CASE_PID[bare]}")
        PEAK[bare.raw]=$(kib VmHWM "${CASE_PID[bare.raw]}")
        stop "${CASE_PID[bare]}"
        stop "${CASE_PID[bare.raw]}"
    fi
}

bench_sweep() {
    local w
    for w in 1 4; do
        say "== latchkey /auth and the floor with $w workers (LATCHKEY_LOG=off)"
        start_latchkey "$w" off
        IDLE[lk.w$w]=$(kib VmRSS "$LK_PID")
        start_bare "$w"
        IDLE[bare.w$w]=$(kib VmRSS "$BARE_PID")
        SERVER_PIDS=("$LK_PID" "$BARE_PID")
        expect_status 200 "$LK_URL/auth" -H "Cookie: $COOKIE"
        SWEEP_CASES=(
            "lk.w$w.auth $LK_URL/auth -H 'Cookie: $COOKIE'"
            "bare.w$w $BARE_URL/"
        )
        CASE_PID[lk.w$w.auth]=$LK_PID
        CASE_PID[bare.w$w]=$BARE_PID
        measure_cases SWEEP_CASES
        PEAK[lk.w$w]=$(kib VmHWM "$LK_PID")
        PEAK[bare.w$w]=$(kib VmHWM "$BARE_PID")
        stop "$LK_PID"
        stop "$BARE_PID"
    done
}

write_login_lua() {
    cat >"$TMP/login.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"username":"bench","password":"$PASSWORD"}'
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; busy = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 503 then busy = busy + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local o, b, x = 0, 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("busy"); x = x + t:get("other") end
  io.write(string.format("LOGINS ok=%d busy=%d other=%d\n", o, b, x))
end
EOF
}

bench_login() {
    say "== login cost: POST /api/login, argon2id at the defaults, $WORKERS workers"
    write_login_lua
    start_latchkey "$WORKERS" off
    SERVER_PIDS=("$LK_PID")
    expect_status 200 "$LK_URL/api/login" -X POST -H 'Content-Type: application/json' \
        -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}"
    local rep out secs flood ok busy
    secs=${DURATION%s}
    for rep in $(seq 1 "$REPS"); do
        # One client logging in back to back: the latency of one login, and logins/s.
        wait_quiet
        out=$(wrk -t1 -c1 -d"$LOGIN_DURATION" --latency -s "$TMP/login.lua" "$LK_URL/api/login")
        read -r rps p50 p99 bad n < <(parse_wrk <<<"$out")
        printf 'login.c1\t%s\t%s\t%s\t%s\t-\t-\n' "$rps" "$p50" "$p99" "$bad" >>"$RESULTS"
        say "  login.c1: $rps logins/s, p50 $p50 ms, p99 $p99 ms ($(grep LOGINS <<<"$out"))"

        # The token-only /auth load alone, then again during a login flood (4 connections;
        # the flood's wrk counts as "others" in the CPU column of that run).
        run_wrk calm.auth "$LK_URL/auth" -H "Cookie: $COOKIE"
        wrk -t1 -c4 -d"$((secs + 2))s" --latency -s "$TMP/login.lua" \
            "$LK_URL/api/login" >"$TMP/flood.out" &
        flood=$!
        sleep 1
        run_wrk flood.auth "$LK_URL/auth" -H "Cookie: $COOKIE"
        wait "$flood"
        ok=$(sed -n 's/^LOGINS ok=\([0-9]*\).*/\1/p' "$TMP/flood.out")
        busy=$(sed -n 's/^LOGINS.*busy=\([0-9]*\).*/\1/p' "$TMP/flood.out")
        printf 'flood.logins\t%s\t-\t-\t%s\t-\t-\n' \
            "$(awk -v n="$ok" -v s="$((secs + 2))" 'BEGIN { printf "%.1f", n / s }')" "$busy" >>"$RESULTS"
        say "  flood: $(grep LOGINS "$TMP/flood.out") in $((secs + 2)) s"
    done
    PEAK[lk.login]=$(kib VmHWM "$LK_PID")
    AFTER[lk.login]=$(kib VmRSS "$LK_PID")
    stop "$LK_PID"

    # The same back-to-back logins with glibc's mmap threshold pinned at its default
    # (128 KiB): the 19 MiB argon2 blocks then go back to the system after each hash.
    say "== logins with MALLOC_MMAP_THRESHOLD_=131072"
    MALLOC_MMAP_THRESHOLD_=131072 start_latchkey "$WORKERS" off
    wrk -t1 -c1 -d"$LOGIN_DURATION" -s "$TMP/login.lua" "$LK_URL/api/login" >/dev/null
    PEAK[lk.login.mmap]=$(kib VmHWM "$LK_PID")
    AFTER[lk.login.mmap]=$(kib VmRSS "$LK_PID")
    stop "$LK_PID"
}

# --- the floor -----------------------------------------------------------------------

start_bare() { # WORKERS [stock|raw]: stock is the crates.io floor, raw the patched copy
    local port
    port=$(free_port)
    BARE_URL=http://127.0.0.1:$port
    if [ "${2:-stock}" = stock ]; then
        "$FLOOR" "127.0.0.1:$port" "$1" 2>/dev/null &
    else
        "$BARE" "127.0.0.1:$port" "$1" raw 2>/dev/null &
    fi
    BARE_PID=$!
    PIDS+=("$BARE_PID")
    wait_http "$BARE_URL/"
    sleep 0.5
}

# --- idle connections ---------------------------------------------------------------

# Holds N keep-alive connections, each after one answered GET, from 100 loopback source
# addresses (so latchkey's default per-address cap, 64, is not what is measured); prints
# "held" and waits for a line on stdin before closing them all.
write_idle_py() {
    cat >"$TMP/idle.py" <<'PY'
import socket, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = []
for i in range(n):
    s = socket.socket()
    s.bind(("127.0.0.%d" % (10 + i % 100), 0))
    s.connect(("127.0.0.1", port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    conns.append(s)
print("held", flush=True)
sys.stdin.readline()
for s in conns:
    s.close()
PY
}

proc_report() { # PID: "threads descriptors rss_kib"
    printf '%s %s %s' "$(awk '/^Threads:/ { print $2 }' "/proc/$1/status")" \
        "$(ls "/proc/$1/fd" | wc -l)" "$(kib VmRSS "$1")"
}

idle_case() { # NAME PID PORT PATH
    local name=$1 pid=$2 port=$3 path=$4 n line
    IDLEC[$name.0]=$(proc_report "$pid")
    for n in 1000 5000; do
        coproc HOLD { python3 "$TMP/idle.py" "$port" "$n" "$path"; }
        local hold_pid=$HOLD_PID
        read -r line <&"${HOLD[0]}"
        [ "$line" = held ] || die "the idle client could not hold $n connections"
        sleep 1
        IDLEC[$name.$n]=$(proc_report "$pid")
        echo >&"${HOLD[1]}"
        wait "$hold_pid" 2>/dev/null || true
        sleep 3
        IDLEC[$name.$n.after]=$(proc_report "$pid")
        say "  $name: $n idle: ${IDLEC[$name.$n]}; after they closed: ${IDLEC[$name.$n.after]} (threads fds RSS KiB)"
    done
}

bench_idle() {
    say "== idle connections: threads, descriptors, RSS (latchkey and the stock floor, $WORKERS workers)"
    write_idle_py
    # Both servers get the same descriptor limit; latchkey raises its soft limit itself.
    ulimit -n "$(ulimit -Hn)"
    [ -d "$DATA" ] || { mkdir -p "$DATA"; }
    start_latchkey "$WORKERS" off
    idle_case lk "$LK_PID" "$LK_PORT" /healthz
    stop "$LK_PID"
    start_bare "$WORKERS" stock
    idle_case floor "$BARE_PID" "${BARE_URL##*:}" /
    stop "$BARE_PID"
}

report_idle() {
    echo
    echo "Idle keep-alive connections (each after one answered GET; $WORKERS workers; RSS in MiB):"
    echo
    echo "| server | state | threads | descriptors | RSS |"
    echo "|---|---|---|---|---|"
    local name state t f r label shown
    for name in lk floor; do
        label=latchkey
        [ "$name" = floor ] && label="floor (stock tiny_http 0.12)"
        for state in 0 1000 1000.after 5000 5000.after; do
            [ -n "${IDLEC[$name.$state]:-}" ] || continue
            read -r t f r <<<"${IDLEC[$name.$state]}"
            case $state in
                0) shown="started, no connection" ;;
                *.after) shown="after the ${state%.after} closed (3 s later)" ;;
                *) shown="$state idle connections" ;;
            esac
            echo "| $label | $shown | $t | $f | $(mib "$r") |"
        done
    done
}

# --- the Flask original --------------------------------------------------------------

flask_rss() { # STATUS-FIELD: sum over the gunicorn master and its workers
    local total=0 pid
    for pid in "$FLASK_PID" $(pgrep -P "$FLASK_PID"); do
        total=$((total + $(kib "$1" "$pid")))
    done
    echo "$total"
}

bench_flask() {
    local dir=$FLASK_SEED_DIR
    if [ ! -f "$dir/app.py" ] || ! command -v gunicorn >/dev/null; then
        say "== Flask original: skipped ($dir/app.py or gunicorn missing)"
        return
    fi
    dir=$(cd "$dir" && pwd)
    say "== Flask original under gunicorn, 2 sync workers"
    local port
    port=$(free_port)
    local url=http://127.0.0.1:$port
    export FLASK_SEED_DB=$TMP/seed.db
    (cd "$dir" && python3 app.py --init)
    gunicorn -w 2 -b "127.0.0.1:$port" --chdir "$dir" app:app 2>"$TMP/gunicorn.log" &
    FLASK_PID=$!
    PIDS+=("$FLASK_PID")
    wait_http "$url/login/"
    sleep 1
    IDLE[flask]=$(flask_rss VmRSS)
    # shellcheck disable=SC2207
    SERVER_PIDS=("$FLASK_PID" $(pgrep -P "$FLASK_PID"))
    local ftoken
    ftoken=$(curl -s -o /dev/null -D - -d 'username=alice&password=alice-password' "$url/login/" |
        sed -n 's/^Set-Cookie: token=\([^;]*\);.*/\1/Ip' | tr -d '\r')
    [ -n "$ftoken" ] || die "Flask login gave no token cookie"
    curl -s -H "Cookie: token=$ftoken" "$url/" | grep -q alice || die "Flask did not recognise the token"
    expect_status 200 "$url/"
    expect_status 200 "$url/" -H "Cookie: token=garbage.not.jwt"
    FLASK_CASES=(
        "flask.anon $url/"
        "flask.account $url/ -H 'Cookie: token=$ftoken'"
        "flask.auth $url/token-info -H 'Cookie: token=$ftoken'"
        "flask.garbage $url/ -H 'Cookie: token=garbage.not.jwt'"
    )
    measure_cases FLASK_CASES
    PEAK[flask]=$(flask_rss VmHWM)
    stop "$FLASK_PID"
}

# --- the report ----------------------------------------------------------------------

row() { # LABEL KEY [RSS-KEY]
    local rps p50 p99 bad others cpu idle=- peak=-
    rps=$(median "$2" 2)
    p50=$(median "$2" 3)
    p99=$(median "$2" 4)
    bad=$(median "$2" 5)
    others=$(median "$2" 6)
    cpu=$(median "$2" 7)
    if [ -n "${3:-}" ]; then
        [ -n "${IDLE[$3]:-}" ] && idle=$(mib "${IDLE[$3]}")
        [ -n "${PEAK[$3]:-}" ] && peak=$(mib "${PEAK[$3]}")
    fi
    [ "$rps" = - ] && return
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |%s\n' "$1" "$(printf '%.0f' "$rps")" \
        "$(printf '%.2f' "$p50")" "$(printf '%.2f' "$p99")" "$cpu" "$idle" "$peak" "$others" \
        "$([ "$bad" != 0 ] && [ "$bad" != - ] && echo " $bad non-2xx/3xx or socket errors")"
}

# The best round of a case: the most req/s (column 2) or the least CPU per request
# (column 7). Noise on this host only ever slows a run down, so best rounds compare the
# servers when neither was disturbed; medians and best rounds are reported side by side.
best() { # KEY COLUMN
    awk -F'\t' -v k="$1" -v c="$2" '$1 == k && (n++ == 0 || (c == 7 ? $c < v : $c > v)) { v = $c }
        END { print (n ? v : "-") }' "$RESULTS"
}

ratio() { # A B [COLUMN [median|best]]
    local a b
    a=$("${4:-median}" "$1" "${3:-2}")
    b=$("${4:-median}" "$2" "${3:-2}")
    if [ "$a" = - ] || [ "$b" = - ]; then echo -; return; fi
    awk -v a="$a" -v b="$b" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else printf "-" }'
}

report() {
    local size
    size=$(stat -c %s "$BIN")
    {
        echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, loopback; median of $REPS runs;"
        echo "latchkey and the floor with $WORKERS workers; RSS in MiB (VmRSS after start, VmHWM after the load;"
        echo "Flask: master + 2 workers summed); others' CPU %: share of the machine's CPU taken by other"
        echo "processes during the runs (median), the noise of this shared host; server CPU µs/req: the"
        echo "server's user+system CPU time over the run divided by the requests answered (less noisy than req/s)."
        echo
        echo "| case | req/s | p50 ms | p99 ms | server CPU µs/req | idle RSS | peak RSS | others' CPU % |"
        echo "|---|---|---|---|---|---|---|---|"
        row "floor: stock tiny_http 0.12, GET / (fixed page)" bare bare
        row "floor: stock tiny_http 0.12, GET / with the authenticated Cookie header" bare.cookie bare
        row "patched tiny_http (examples/bare.rs) answering like latchkey (raw mode), same Cookie header" bare.raw bare.raw
        local log
        for log in off info; do
            local what="access log off"
            [ "$log" = info ] && what="access log on (LATCHKEY_LOG=info, to a file)"
            row "latchkey, $what: GET / anonymous" "lk.$log.anon" "lk.$log"
            row "latchkey, $what: GET /account, valid cookie" "lk.$log.account" "lk.$log"
            row "latchkey, $what: GET /auth, valid cookie" "lk.$log.auth" "lk.$log"
            row "latchkey, $what: GET /, garbage cookie (303)" "lk.$log.garbage" "lk.$log"
        done
        row "Flask + gunicorn 2 sync: GET / anonymous" flask.anon flask
        row "Flask + gunicorn 2 sync: GET /, valid cookie (its auth page)" flask.account flask
        row "Flask + gunicorn 2 sync: GET /token-info, valid cookie" flask.auth flask
        row "Flask + gunicorn 2 sync: GET /, garbage cookie" flask.garbage flask
        echo
        echo "Worker sweep (LATCHKEY_LOG=off):"
        echo
        echo "| workers | latchkey /auth req/s | p99 ms | CPU µs/req | floor req/s | floor CPU µs/req | /auth / floor req/s | latchkey peak RSS |"
        echo "|---|---|---|---|---|---|---|---|"
        local w lk fl
        for w in 1 2 4; do
            if [ "$w" = "$WORKERS" ]; then lk=lk.off.auth fl=bare; rss=lk.off; else lk=lk.w$w.auth fl=bare.w$w rss=lk.w$w; fi
            [ "$(median "$lk" 2)" = - ] && continue
            printf '| %s | %.0f | %.2f | %s | %s | %s | %s | %s |\n' "$w" "$(median "$lk" 2)" "$(median "$lk" 4)" \
                "$(median "$lk" 7)" "$(printf '%.0f' "$(median "$fl" 2)" 2>/dev/null || echo -)" "$(median "$fl" 7)" "$(ratio "$lk" "$fl")" \
                "$([ -n "${PEAK[$rss]:-}" ] && mib "${PEAK[$rss]}" || echo -)"
        done
        echo
        echo "Ratios (requests/s; medians, and best rounds in brackets):"
        echo
        echo "| ratio | log off | log on | target |"
        echo "|---|---|---|---|"
        local pairs=(
            "latchkey /account / Flask authenticated GET /|account|flask.account|2|>= 15"
            "latchkey /auth / floor|auth|bare|2|>= 0.90"
            "latchkey /account / floor|account|bare|2|>= 0.80"
            "latchkey /auth / floor with the same cookie|auth|bare.cookie|2|"
            "latchkey /account / floor with the same cookie|account|bare.cookie|2|"
            "latchkey /auth / patched raw-mode bare (same cookie, same response writer)|auth|bare.raw|2|"
            "latchkey /account / patched raw-mode bare (same cookie, same response writer)|account|bare.raw|2|"
            "CPU per request: floor / latchkey /auth|auth|bare|7|(>= 0.90)"
            "CPU per request: floor / latchkey /account|account|bare|7|(>= 0.80)"
            "CPU per request: Flask auth page / latchkey /account|account|flask.account|7|(>= 15)"
        )
        local pair label case other col target
        for pair in "${pairs[@]}"; do
            IFS='|' read -r label case other col target <<<"$pair"
            local cells=() lg a b
            for lg in off info; do
                if [ "$col" = 7 ]; then a=$other b=lk.$lg.$case; else a=lk.$lg.$case b=$other; fi
                cells+=("$(ratio "$a" "$b" "$col") ($(ratio "$a" "$b" "$col" best))")
            done
            echo "| $label | ${cells[0]} | ${cells[1]} | $target |"
        done
        if [ "$(median login.c1 2)" != - ]; then
            echo
            echo "Login cost (POST /api/login, argon2id defaults m=19 MiB t=2 p=1, login_concurrency $((WORKERS > 1 ? WORKERS - 1 : 1))):"
            echo
            echo "| case | value |"
            echo "|---|---|"
            echo "| one client back to back: login latency p50 / p99 | $(median login.c1 3) ms / $(median login.c1 4) ms |"
            echo "| one client back to back: logins/s | $(median login.c1 2) |"
            echo "| flood (4 connections): successful logins/s, 503 answers per run | $(median flood.logins 2) / $(median flood.logins 5) |"
            echo "| /auth without flood (same phase, just before each flood): req/s, p99 | $(printf '%.0f' "$(median calm.auth 2)") / $(median calm.auth 4) ms |"
            echo "| /auth during the flood: req/s, p99 | $(printf '%.0f' "$(median flood.auth 2)") / $(median flood.auth 4) ms |"
            echo "| latchkey RSS after the logins: peak / still held | $(mib "${PEAK[lk.login]}") / $(mib "${AFTER[lk.login]}") MiB |"
            echo "| the same with MALLOC_MMAP_THRESHOLD_=131072: peak / still held | $(mib "${PEAK[lk.login.mmap]}") / $(mib "${AFTER[lk.login.mmap]}") MiB |"
        fi
        report_idle
        echo
        echo "Release binary (stripped): $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }') MiB)."
    } | tee "$OUT"
}

# --- release profile variants --------------------------------------------------------

bench_profiles() {
    local dir=$ROOT/target/bench/profiles opt panic
    mkdir -p "$dir"
    OUT_DIR=$(dirname "$OUT")
    : >"$TMP/instructions.tsv"
    for opt in 3 s z; do
        for panic in unwind abort; do
            say "== opt-level=$opt panic=$panic"
            CARGO_PROFILE_RELEASE_OPT_LEVEL=$opt CARGO_PROFILE_RELEASE_PANIC=$panic \
                cargo build --release --bin latchkey >&2
            cp "$ROOT/target/release/latchkey" "$dir/latchkey-$opt-$panic"
        done
    done
    # The same user store and key for every variant.
    BIN=$dir/latchkey-3-unwind
    setup_latchkey
    for rep in $(seq 1 "$REPS"); do
        for opt in 3 s z; do
            for panic in unwind abort; do
                BIN=$dir/latchkey-$opt-$panic
                start_latchkey "$WORKERS" off
                SERVER_PIDS=("$LK_PID")
                [ "$rep" = 1 ] && warm "$LK_URL/auth" -H "Cookie: $COOKIE"
                say " round $rep/$REPS opt-level=$opt panic=$panic"
                run_wrk "p.$opt.$panic" "$LK_URL/auth" -H "Cookie: $COOKIE"
                stop "$LK_PID"
            done
        done
    done
    # Instructions per /auth request of each variant (repeatable, unlike req/s here).
    local port
    for opt in 3 s z; do
        for panic in unwind abort; do
            port=$(free_port)
            LATCHKEY_WORKERS=$WORKERS LATCHKEY_LOG=off cg_start "$TMP/cg.p.$opt.$panic" \
                "$dir/latchkey-$opt-$panic" serve --data-dir "$DATA" --listen "127.0.0.1:$port"
            wait_http "http://127.0.0.1:$port/healthz"
            cg_case "p.$opt.$panic" "$CG_PID" "$TMP/cg.p.$opt.$panic" "http://127.0.0.1:$port/auth" \
                -H "Cookie: $COOKIE"
            stop "$CG_PID"
        done
    done
    {
        echo "Release profile variants (lto = true, codegen-units = 1, strip = true; /auth, LATCHKEY_LOG=off,"
        echo "wrk -t$THREADS -c$CONNS -d$DURATION, median of $REPS runs, interleaved):"
        echo
        echo "| opt-level | panic | binary bytes | /auth req/s | p99 ms | server CPU µs/req | others' CPU % | /auth instructions/request (callgrind) |"
        echo "|---|---|---|---|---|---|---|---|"
        for opt in 3 s z; do
            for panic in unwind abort; do
                printf '| %s | %s | %s | %.0f | %s | %s | %s | %s |\n' "$opt" "$panic" \
                    "$(stat -c %s "$dir/latchkey-$opt-$panic")" \
                    "$(median "p.$opt.$panic" 2)" "$(median "p.$opt.$panic" 4)" "$(median "p.$opt.$panic" 7)" \
                    "$(median "p.$opt.$panic" 6)" \
                    "$(awk -F'\t' -v k="p.$opt.$panic" '$1 == k { printf "%d", $3 / $2 }' "$TMP/instructions.tsv")"
            done
        done
    } | tee "${OUT%.md}-profiles.md"
    say "== rebuilding target/release/latchkey with the Cargo.toml profile"
    cargo build --release --bin latchkey >&2
}

# --- instruction counts -------------------------------------------------------------

# callgrind counts the user-space instructions of every thread of a server; unlike req/s
# they do not depend on what else runs on the machine. Kernel work (socket syscalls,
# context switches) is not counted.
cg_case() { # NAME PID FILE-PREFIX URL [wrk args]: instructions per request
    local name=$1 pid=$2 prefix=$3 url=$4; shift 4
    local out n file ir
    wrk -t1 -c1 -d1s "$@" "$url" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    out=$(wrk -t1 -c1 -d3s "$@" "$url")
    callgrind_control -d "$pid" >/dev/null
    n=$(awk '/ requests in / { print $1 }' <<<"$out")
    file=$(ls -t "$prefix".* | head -1)
    ir=$(awk '/^summary:/ { print $2 }' "$file")
    cp "$file" "$OUT_DIR/callgrind.$name.out"
    printf '%s\t%s\t%s\n' "$name" "$n" "$ir" >>"$TMP/instructions.tsv"
    say "  $name: $n requests, $((ir / n)) instructions per request"
}

cg_start() { # PREFIX COMMAND...: starts COMMAND under callgrind; CG_PID
    local prefix=$1; shift
    valgrind --tool=callgrind --callgrind-out-file="$prefix" "$@" 2>>"$TMP/valgrind.log" &
    CG_PID=$!
    PIDS+=("$CG_PID")
}

bench_instructions() {
    command -v valgrind >/dev/null || die "valgrind is not installed"
    local prof=$ROOT/target/profiling
    say "== profiling build (release profile + debug info, not stripped) in $prof"
    CARGO_TARGET_DIR=$prof CARGO_PROFILE_RELEASE_DEBUG=true CARGO_PROFILE_RELEASE_STRIP=false \
        cargo build --release --bin latchkey --example bare >&2
    CARGO_PROFILE_RELEASE_DEBUG=true cargo build --release --locked \
        --manifest-path benches/floor/Cargo.toml --target-dir "$prof/floor" >&2
    BIN=$prof/release/latchkey
    OUT_DIR=$(dirname "$OUT")
    : >"$TMP/instructions.tsv"
    setup_latchkey

    local port
    port=$(free_port)
    cg_start "$TMP/cg.bare" "$prof/floor/release/floor" "127.0.0.1:$port" "$WORKERS"
    wait_http "http://127.0.0.1:$port/"
    cg_case bare "$CG_PID" "$TMP/cg.bare" "http://127.0.0.1:$port/"
    cg_case bare.cookie "$CG_PID" "$TMP/cg.bare" "http://127.0.0.1:$port/" -H "Cookie: $COOKIE"
    stop "$CG_PID"
    port=$(free_port)
    cg_start "$TMP/cg.bare.raw" "$prof/release/examples/bare" "127.0.0.1:$port" "$WORKERS" raw
    wait_http "http://127.0.0.1:$port/"
    cg_case bare.raw "$CG_PID" "$TMP/cg.bare.raw" "http://127.0.0.1:$port/" -H "Cookie: $COOKIE"
    stop "$CG_PID"

    local log
    for log in off info; do
        port=$(free_port)
        local errlog=/dev/null
        [ "$log" = off ] || errlog=$TMP/latchkey-cg.log
        LATCHKEY_WORKERS=$WORKERS LATCHKEY_LOG=$log cg_start "$TMP/cg.lk.$log" \
            "$BIN" serve --data-dir "$DATA" --listen "127.0.0.1:$port"
        wait_http "http://127.0.0.1:$port/healthz"
        local url=http://127.0.0.1:$port
        if [ "$log" = off ]; then
            cg_case lk.off.anon "$CG_PID" "$TMP/cg.lk.$log" "$url/"
            cg_case lk.off.account "$CG_PID" "$TMP/cg.lk.$log" "$url/account" -H "Cookie: $COOKIE"
            cg_case lk.off.garbage "$CG_PID" "$TMP/cg.lk.$log" "$url/" -H "Cookie: token=garbage.not.jwt"
        fi
        cg_case "lk.$log.auth" "$CG_PID" "$TMP/cg.lk.$log" "$url/auth" -H "Cookie: $COOKIE"
        stop "$CG_PID"
    done

    local floor floorc
    floor=$(awk -F'\t' '$1 == "bare" { printf "%d", $3 / $2 }' "$TMP/instructions.tsv")
    floorc=$(awk -F'\t' '$1 == "bare.cookie" { printf "%d", $3 / $2 }' "$TMP/instructions.tsv")
    {
        echo "Instructions per request (callgrind, user space, all threads; wrk -t1 -c1 -d3s after a"
        echo "1 s warm-up; $WORKERS workers):"
        echo
        echo "| case | instructions/request | x floor | x floor with the same cookie |"
        echo "|---|---|---|---|"
        awk -F'\t' -v floor="$floor" -v floorc="$floorc" '{
            per = $3 / $2
            label = $1
            sub(/^bare$/, "floor: stock tiny_http 0.12, GET /", label)
            sub(/^bare\.cookie$/, "floor: stock tiny_http 0.12, GET / with the authenticated Cookie header", label)
            sub(/^bare\.raw$/, "patched tiny_http (examples/bare.rs) in raw mode, same Cookie header", label)
            sub(/^lk\.off\./, "latchkey, log off: ", label)
            sub(/^lk\.info\./, "latchkey, access log on: ", label)
            sub(/anon$/, "GET / anonymous", label); sub(/account$/, "GET /account", label)
            sub(/: auth$/, ": GET /auth", label); sub(/garbage$/, "GET /, garbage cookie", label)
            same = ($1 ~ /(account|auth)$/) ? sprintf("%.2f", per / floorc) : ""
            printf "| %s | %d | %.2f | %s |\n", label, per, per / floor, same }' "$TMP/instructions.tsv"
        echo
        echo "(callgrind_annotate $OUT_DIR/callgrind.<case>.out shows where they go.)"
    } | tee "${OUT%.md}-instructions.md"
}


# --- the PostgreSQL store -------------------------------------------------------------

PG_ROOT=
PG_BIN=
PG_PORT=
stop_pg() {
    [ -n "$PG_ROOT" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m immediate -w stop >/dev/null 2>&1 || true
    [ -n "$PG_ROOT" ] && rm -rf "$PG_ROOT"
    PG_ROOT=
}

start_pg() { # a throwaway server on a loopback port: PG_URL
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL's server binaries are missing (apt-get install postgresql)"
    PG_ROOT=$(mktemp -d -t latchkey-bench-pg.XXXXXX)
    chmod 755 "$PG_ROOT"
    echo "bench-db-password" >"$PG_ROOT/pw"
    chown -R postgres:postgres "$PG_ROOT"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_ROOT/data" -U postgres --pwfile="$PG_ROOT/pw" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >/dev/null
    PG_PORT=$(free_port)
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_ROOT" start >/dev/null
    runuser -u postgres -- "$PG_BIN/psql" -h "$PG_ROOT" -p "$PG_PORT" -U postgres -qc "CREATE DATABASE bench" >/dev/null
    PG_URL="postgres://postgres:bench-db-password@127.0.0.1:$PG_PORT/bench"
}

bench_postgres() {
    local PGT=$ROOT/target/postgres
    say "== building with --features postgres (in $PGT)"
    cargo build --release --features postgres --target-dir "$PGT" --bin latchkey >&2
    cargo build --release --locked --manifest-path benches/floor/Cargo.toml --target-dir target/floor >&2
    BIN=$PGT/release/latchkey
    start_pg
    trap 'stop_pg; cleanup' EXIT
    mkdir -p "$DATA"
    "$BIN" key generate "$DATA/secret.key" >&2
    echo "$PASSWORD" | "$BIN" user add bench --store "$PG_URL" >&2
    echo "$PASSWORD" | "$BIN" user add bench --data-dir "$DATA" >&2
    # The same binary on each store, so only the store differs.
    start_lk_store() { # STORE(redb|pg)
        LK_PORT=$(free_port)
        LK_URL=http://127.0.0.1:$LK_PORT
        if [ "$1" = pg ]; then
            LATCHKEY_WORKERS=$WORKERS LATCHKEY_LOG=off LATCHKEY_STORE=$PG_URL \
                "$BIN" serve --data-dir "$DATA/pg" --key-file "$DATA/secret.key" --listen "127.0.0.1:$LK_PORT" 2>/dev/null &
        else
            LATCHKEY_WORKERS=$WORKERS LATCHKEY_LOG=off \
                "$BIN" serve --data-dir "$DATA" --key-file "$DATA/secret.key" --listen "127.0.0.1:$LK_PORT" 2>/dev/null &
        fi
        LK_PID=$!
        PIDS+=("$LK_PID")
        wait_http "$LK_URL/healthz"
        sleep 0.5
    }
    start_lk_store pg
    local reply
    reply=$(curl -s -X POST -H 'Content-Type: application/json' \
        -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" "$LK_URL/api/login")
    TOKEN=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$reply")
    [ -n "$TOKEN" ] || die "login failed: $reply"
    CSRF=$(curl -s -o /dev/null -D - -H "Cookie: token=$TOKEN" "$LK_URL/account" |
        sed -n 's/^Set-Cookie: csrf=\([^;]*\);.*/\1/Ip' | tr -d '\r')
    COOKIE="token=$TOKEN; csrf=$CSRF"
    expect_status 200 "$LK_URL/auth" -H "Cookie: $COOKIE"
    expect_status 200 "$LK_URL/account" -H "Cookie: $COOKIE"
    start_bare "$WORKERS" stock
    CASE_PID[pg.auth]=$LK_PID
    CASE_PID[pg.account]=$LK_PID
    CASE_PID[bare]=$BARE_PID
    CASE_PID[bare.cookie]=$BARE_PID
    local PG_CASES=(
        "bare $BARE_URL/"
        "bare.cookie $BARE_URL/ -H 'Cookie: $COOKIE'"
        "pg.auth $LK_URL/auth -H 'Cookie: $COOKIE'"
        "pg.account $LK_URL/account -H 'Cookie: $COOKIE'"
    )
    say "== latchkey on PostgreSQL and the floor, $WORKERS workers"
    # How many transactions the runs cost the database: the memo means none per request.
    xacts() {
        sleep 1.5 # the statistics reach pg_stat_database within a second
        runuser -u postgres -- "$PG_BIN/psql" -h "$PG_ROOT" -p "$PG_PORT" -U postgres -d bench -Atc \
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'bench'"
    }
    local x0 x1 served
    x0=$(xacts)
    measure_cases PG_CASES
    x1=$(xacts)
    served=$(awk -F'\t' '$1 ~ /^pg\./ { n += 0 } END { print n }' "$RESULTS")
    local calls=$((x1 - x0 - 1))
    stop "$BARE_PID"
    write_login_lua
    local store rep out
    for store in pg redb; do
        [ "$store" = pg ] || { stop "$LK_PID"; start_lk_store redb; }
        SERVER_PIDS=("$LK_PID")
        expect_status 200 "$LK_URL/api/login" -X POST -H 'Content-Type: application/json' \
            -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}"
        for rep in $(seq 1 "$REPS"); do
            wait_quiet
            out=$(wrk -t1 -c1 -d"$LOGIN_DURATION" --latency -s "$TMP/login.lua" "$LK_URL/api/login")
            read -r rps p50 p99 bad n < <(parse_wrk <<<"$out")
            printf 'login.%s\t%s\t%s\t%s\t%s\t-\t-\n' "$store" "$rps" "$p50" "$p99" "$bad" >>"$RESULTS"
            say "  login.$store: $rps logins/s, p50 $p50 ms, p99 $p99 ms ($(grep LOGINS <<<"$out"))"
        done
    done
    stop "$LK_PID"
    {
        echo "The PostgreSQL store (release build with --features postgres; a local PostgreSQL $(basename "$(dirname "$PG_BIN")"),"
        echo "on the same machine, over loopback TCP with scram passwords); wrk -t$THREADS -c$CONNS -d$DURATION,"
        echo "median of $REPS interleaved runs; $WORKERS workers:"
        echo
        echo "| case | req/s | p50 ms | p99 ms | server CPU µs/req |"
        echo "|---|---|---|---|---|"
        local k
        for k in bare bare.cookie pg.auth pg.account; do
            printf '| %s | %.0f | %s | %s | %s |\n' "$k" "$(median "$k" 2)" "$(median "$k" 3)" "$(median "$k" 4)" "$(median "$k" 7)"
        done
        echo
        echo "| ratio | median (best) | target |"
        echo "|---|---|---|"
        echo "| latchkey /auth on PostgreSQL / floor | $(ratio pg.auth bare) ($(ratio pg.auth bare 2 best)) | >= 0.90 |"
        echo "| latchkey /account on PostgreSQL / floor | $(ratio pg.account bare) ($(ratio pg.account bare 2 best)) | >= 0.80 |"
        echo
        echo "Transactions of the database during all the /auth and /account runs above (the psql that"
        echo "reads the count excluded): $calls."
        echo
        echo "| logins (POST /api/login, one client back to back, argon2id defaults) | logins/s | p50 ms | p99 ms |"
        echo "|---|---|---|---|"
        for k in redb pg; do
            echo "| $k store | $(median "login.$k" 2) | $(median "login.$k" 3) | $(median "login.$k" 4) |"
        done
        echo
        echo "Release binary with --features postgres (stripped): $(stat -c %s "$BIN") bytes."
    } | tee "${OUT%.md}-postgres.md"
    stop_pg
}

# --- main ----------------------------------------------------------------------------

mkdir -p "$(dirname "$OUT")"
declare -A IDLE PEAK AFTER CASE_PID IDLEC
case $MODE in
    profiles) bench_profiles; exit 0 ;;
    instructions) bench_instructions; exit 0 ;;
    postgres) bench_postgres; exit 0 ;;
    idle) build; bench_idle; report_idle | tee "${OUT%.md}-idle.md"; exit 0 ;;
    floor)
        build
        setup_latchkey
        bench_latchkey off
        bench_idle
        report
        exit 0
        ;;
    all) ;;
    *) die "usage: benches/http.sh [floor | idle | profiles | instructions | postgres]" ;;
esac
build
say "== setting up: user store, API login"
setup_latchkey
bench_latchkey off
bench_latchkey info
bench_flask
bench_sweep
bench_login
bench_idle
report
