#!/usr/bin/env bash
# Local Apache Kafka (Maven Central jars) and FerretDB (embedded, Go module proxy) on loopback, without Docker.
# FerretDB keeps its data in PostgreSQL (Debian's `postgresql`, its own cluster in this instance's state directory,
# started and stopped here) or, with WASPADA_FERRETDB_BACKEND=sqlite, in SQLite files.
#
#   infra/local/infra.sh install   fetch the Kafka jars and build the FerretDB runner (cached; no-op when present)
#   infra/local/infra.sh start     start both (no-op for one already running), wait until each answers
#   infra/local/infra.sh stop      stop both by their recorded pids
#   infra/local/infra.sh status    say what runs
#   infra/local/infra.sh fresh     stop, wipe this instance's data, start (a clean broker and database)
#
# Downloads and builds are cached in <repo>/.local-infra/cache; data, logs and pids of one instance live in
# $WASPADA_INFRA_DIR (default <repo>/.local-infra). `make test` runs its own instance on other ports.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${WASPADA_INFRA_DIR:-$repo/.local-infra}"
cache="$repo/.local-infra/cache"
kafka_version="3.9.2"
kafka_port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-9093}"
ferret_port="${FERRETDB_PORT:-27017}"
backend="${WASPADA_FERRETDB_BACKEND:-postgresql}"
pg_port="${POSTGRES_PORT:-5432}"
pg_bin="${POSTGRES_BIN:-/usr/lib/postgresql/15/bin}"

kafka_libs="$cache/kafka-libs-$kafka_version"
kafka_data="$state/kafka/data"
ferret_bin="$cache/bin/ferretdb-runner"
ferret_stamp="$cache/bin/ferretdb-runner.sum"
ferret_data="$state/ferretdb/data"
pg_dir="$state/postgres"  # data/ (the cluster) and the server's socket; see postgres_reachable
logs="$state/logs"
pids="$state/pids"

log() { printf '[infra] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { # alive NAME -> 0 when the recorded pid runs
  local f="$pids/$1.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

install_kafka() {
  if [[ -f "$kafka_libs/.complete" ]]; then return; fi
  log "fetching Kafka $kafka_version jars from Maven Central (first time only)"
  rm -rf "$kafka_libs" && mkdir -p "$kafka_libs"
  mvn -B -q -f "$here/kafka/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$kafka_libs"
  touch "$kafka_libs/.complete"
}

install_ferretdb() {
  local sum
  sum="$(cat "$here/ferretdb/go.sum" "$here/ferretdb/go.mod" "$here/ferretdb/main.go" | sha256sum | cut -d' ' -f1)"
  if [[ -x "$ferret_bin" && -f "$ferret_stamp" && "$(cat "$ferret_stamp")" == "$sum" ]]; then return; fi
  log "building the FerretDB runner (first time only; the Go module cache makes later builds fast)"
  mkdir -p "$cache/bin"
  (cd "$here/ferretdb" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath -o "$ferret_bin.tmp" .)
  mv "$ferret_bin.tmp" "$ferret_bin"
  echo "$sum" >"$ferret_stamp"
}

install_postgres() {
  if [[ "$backend" != postgresql || -x "$pg_bin/postgres" ]]; then return; fi
  log "installing Debian's postgresql (first time only)"
  if [[ $EUID -ne 0 ]]; then log "PostgreSQL is missing: run as root: apt-get install -y postgresql"; return 1; fi
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
}

as_postgres=()  # PostgreSQL refuses to run as root: as root it runs as the `postgres` user (setpriv execs: its own pid)
if [[ $EUID -eq 0 ]]; then as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups); fi

# As root the server runs as `postgres`, which must be able to reach the state directory. A checkout inside a
# directory only root may enter (mktemp -d makes them 0700) keeps its cluster in postgres's own home instead, one
# per state directory.
postgres_reachable() {
  if [[ $EUID -eq 0 ]] && id postgres >/dev/null 2>&1 && ! setpriv --reuid=postgres --regid=postgres --init-groups \
      test -x "$state" 2>/dev/null; then
    pg_dir="$(getent passwd postgres | cut -d: -f6)/waspada-$(printf '%s' "$state" | sha256sum | cut -c1-16)"
  fi
}

pg_ready() { port_open "$pg_port" && "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; }

start_postgres() {
  if alive postgres; then
    log "postgres already running (pid $(cat "$pids/postgres.pid"))"; prepare_ferretdb_database; return
  fi
  if port_open "$pg_port"; then
    log "port $pg_port is taken by another process; using it as PostgreSQL"; prepare_ferretdb_database; return
  fi
  postgres_reachable
  mkdir -p "$pg_dir" "$logs" "$pids"
  [[ $EUID -eq 0 ]] && chown postgres: "$pg_dir"
  if [[ ! -f "$pg_dir/data/PG_VERSION" ]]; then
    "${as_postgres[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$logs/postgres-initdb.log" 2>&1
  fi
  : >"$logs/postgres.log"
  [[ $EUID -eq 0 ]] && chown postgres: "$logs/postgres.log"
  nohup "${as_postgres[@]}" "$pg_bin/postgres" -D "$pg_dir/data" \
    -p "$pg_port" -c listen_addresses=127.0.0.1 -c unix_socket_directories="$pg_dir" -c max_connections=200 \
    ${POSTGRES_OPTS:-} >>"$logs/postgres.log" 2>&1 &
  echo $! >"$pids/postgres.pid"
  wait_for postgres 60 pg_ready
  prepare_ferretdb_database
  log "postgres ready on 127.0.0.1:$pg_port (pid $(cat "$pids/postgres.pid"))"
}

# FerretDB's database, with the event trigger that gives FerretDB's equality filters indexes they can use
# (postgres/lookups.sql says why).
prepare_ferretdb_database() {
  "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'" \
    | grep -q 1 || "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres ferretdb
  "$pg_bin/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d ferretdb -f "$here/postgres/lookups.sql"
}

wait_for() { # wait_for NAME SECONDS CHECK...
  local name="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if ! alive "$name"; then
      log "$name exited during start; last lines of $logs/$name.log:"; tail -n 30 "$logs/$name.log" >&2 || true
      return 1
    fi
    if ((SECONDS > deadline)); then
      log "$name not ready after ${secs}s; last lines of $logs/$name.log:"; tail -n 30 "$logs/$name.log" >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

kafka_ready() { port_open "$kafka_port" && grep -q "Kafka Server started" "$logs/kafka.log" 2>/dev/null; }

start_kafka() {
  if alive kafka; then log "kafka already running (pid $(cat "$pids/kafka.pid"))"; return; fi
  if port_open "$kafka_port"; then log "port $kafka_port is taken by another process; using it as Kafka"; return; fi
  mkdir -p "$kafka_data" "$logs" "$pids"
  local props="$state/kafka/server.properties"
  sed -e "s#@KAFKA_PORT@#$kafka_port#g" -e "s#@CONTROLLER_PORT@#$controller_port#g" -e "s#@LOG_DIRS@#$kafka_data#g" \
    "$here/kafka/server.properties.in" >"$props"
  # C1 only (TieredStopAtLevel=1): this broker is started afresh for every run, test and benchmark, and on a 2-core
  # machine C2 spent ~9% of a core compiling during a measured run (38% of the broker's CPU), taken from the
  # services and the database; C1's code carried the same load at no more CPU (docs/bench/kafka-c1-20261203.txt).
  local java_flags=(-Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:TieredStopAtLevel=1
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true "-Dlog4j.configuration=file:$here/kafka/log4j.properties")
  if [[ ! -f "$kafka_data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java -cp "$kafka_libs/*" "${java_flags[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java -cp "$kafka_libs/*" "${java_flags[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$props" \
      >"$logs/kafka-format.log" 2>&1
  fi
  : >"$logs/kafka.log"
  nohup java -cp "$kafka_libs/*" "${java_flags[@]}" kafka.Kafka "$props" >>"$logs/kafka.log" 2>&1 &
  echo $! >"$pids/kafka.pid"
  wait_for kafka 90 kafka_ready
  log "kafka ready on 127.0.0.1:$kafka_port (pid $(cat "$pids/kafka.pid"))"
}

start_ferretdb() {
  if alive ferretdb || port_open "$ferret_port"; then  # running already: its PostgreSQL gets the trigger if missing
    if [[ "$backend" == postgresql ]] && pg_ready; then prepare_ferretdb_database; fi
  fi
  if alive ferretdb; then log "ferretdb already running (pid $(cat "$pids/ferretdb.pid"))"; return; fi
  if port_open "$ferret_port"; then log "port $ferret_port is taken by another process; using it as the database"; return; fi
  mkdir -p "$ferret_data" "$logs" "$pids"
  local store=(--handler sqlite --sqlite-url "file:$ferret_data/")
  if [[ "$backend" == postgresql ]]; then
    start_postgres
    # 190 of PostgreSQL's 200 connections: FerretDB v1 holds one per update statement until its command ends
    # and takes another to write, so a small pool can wait for itself forever (shared/mongo.py)
    store=(--handler postgresql --postgresql-url "postgres://postgres@127.0.0.1:$pg_port/ferretdb?pool_max_conns=190")
  fi
  # GOGC: FerretDB turns every stored document into a tree of small Go values and drops it after the command, so
  # with Go's default (100) its collector took 15 % of its CPU under `make bench`; 400 trades some memory for that
  # (FERRETDB_GOGC to change it).
  GOGC="${FERRETDB_GOGC:-400}" nohup "$ferret_bin" --listen-addr "127.0.0.1:$ferret_port" "${store[@]}" --log-level warn \
    ${FERRETDB_PPROF_ADDR:+--pprof-addr "$FERRETDB_PPROF_ADDR"} >"$logs/ferretdb.log" 2>&1 &
  echo $! >"$pids/ferretdb.pid"
  wait_for ferretdb 30 port_open "$ferret_port"
  log "ferretdb ready on 127.0.0.1:$ferret_port (pid $(cat "$pids/ferretdb.pid"))"
}

stop_one() { # stop_one NAME GRACE_SECONDS
  local name="$1" grace="$2" f="$pids/$1.pid"
  [[ -f "$f" ]] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in ${grace}s; killing pid $pid"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

case "${1:-}" in
  install) install_kafka; install_ferretdb; install_postgres ;;
  start) install_kafka; install_ferretdb; install_postgres; start_ferretdb; start_kafka ;;
  stop) stop_one kafka 25; stop_one ferretdb 10; stop_one postgres 30 ;;
  fresh)
    stop_one kafka 25; stop_one ferretdb 10; stop_one postgres 30
    postgres_reachable
    rm -rf "$kafka_data" "$ferret_data" "$pg_dir" "$state/kafka/server.properties"
    install_kafka; install_ferretdb; install_postgres; start_ferretdb; start_kafka ;;
  status)
    for n in kafka ferretdb postgres; do
      if alive "$n"; then echo "$n: running (pid $(cat "$pids/$n.pid"))"; else echo "$n: stopped"; fi
    done ;;
  *) echo "usage: $0 install|start|stop|status|fresh" >&2; exit 2 ;;
esac
