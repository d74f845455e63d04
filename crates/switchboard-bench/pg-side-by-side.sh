#!/bin/bash
# The PostgreSQL backend beside pg-receiver: the same wrk load (post.lua, 64 connections), one run.
# pg-receiver first, then `switchboard serve --database-url` with one replica (64 connections) and
# with two on one database (32 + 32), each on a fresh schema. Run from the project root after
# `cargo build --release`; needs what ../shared/bench/README.md sets up (PostgreSQL, wrk, the
# database switchboard with trust login for postgres@127.0.0.1).
# Usage: crates/switchboard-bench/pg-side-by-side.sh [DURATION=15s]
set -u
here=${BENCH_DIR:-$(pwd)/../shared/bench}; sb=$(pwd)/target/release/switchboard
pgr=$here/pg-receiver/target/release/pg-receiver
DUR=${1:-15s}
PSQL="psql -h 127.0.0.1 -U postgres -d switchboard -Atq"
wrk_at() { (cd $here/pg-receiver/wrk && SEED_DIR=$here/seed-bodies wrk -t${3:-2} -c$2 -d$DUR --timeout 10s --latency -s post.lua "$1") | grep -E "^RESULT (ok|lat)"; }
echo "== pg-receiver, load $(cut -d' ' -f1 /proc/loadavg)"
LISTEN=127.0.0.1:38080 POOL_SIZE=32 BODY_TYPE=jsonb $pgr 2>/dev/null & pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:38080/stats >/dev/null && break; sleep 0.1; done
$PSQL -c "TRUNCATE webhook_events; CHECKPOINT;" >/dev/null
wrk_at http://127.0.0.1:38080 64
kill $pid; wait $pid 2>/dev/null
for replicas in 1 2; do
  schema=bench_r${replicas}_$$
  $PSQL -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema; CHECKPOINT;" >/dev/null
  url="postgres://postgres@127.0.0.1:5432/switchboard?options=-csearch_path%3D$schema"
  pids=()
  for r in $(seq $replicas); do
    $sb serve --database-url "$url" --http-addr 127.0.0.1:3809$r --grpc-addr 127.0.0.1:3819$r >/dev/null 2>&1 & pids+=($!)
  done
  for r in $(seq $replicas); do for _ in $(seq 100); do curl -sf http://127.0.0.1:3809$r/healthz >/dev/null && break; sleep 0.1; done; done
  echo "== switchboard on PostgreSQL, $replicas replica(s), load $(cut -d' ' -f1 /proc/loadavg)"
  if [ $replicas = 1 ]; then wrk_at http://127.0.0.1:38091 64
  else wrk_at http://127.0.0.1:38091 32 1 & wrk_at http://127.0.0.1:38092 32 1; wait; fi
  echo "events: $($PSQL -c "SELECT count(*) FROM $schema.sb_events" 2>&1)  db size of schema tables: $($PSQL -c "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace WHERE n.nspname='$schema'")"
  kill ${pids[@]}; wait ${pids[@]} 2>/dev/null
  $PSQL -c "DROP SCHEMA $schema CASCADE" >/dev/null
done
