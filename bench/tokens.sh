#!/usr/bin/env bash
# Run: bench/tokens.sh   (after `cargo build --release`; env DURATION=4s, ROUNDS=5, THREADS=2,
# CONNECTIONS=32; needs wrk, curl, jq)
#
# What checking a managed token costs on the hot path. Starts the release binary on a fresh
# SQLite file with an admin token and an edge token in the environment, registers one domain,
# makes a managed admin token and a managed edge token through POST /tokens, then loads, with
# wrk, in alternating rounds:
#   * GET /domains/{id} with the environment's admin token, then with the managed admin token;
#   * GET /edge/certificate?server_name=<not ours> (answered 204 from the edge index) with the
#     environment's edge token, then with the managed edge token;
#   * GET /domains/{id} of a tenant's domain with the environment's admin token, then with a
#     tenant token of that tenant (whose scope check needs the domain's tenant, which the replica
#     keeps once read: `read/view_reader.rs`).
# Prints requests/s and p99 of each round, the managed/environment ratio of the time per request
# (the inverse ratio of the rates) of each round, and the median ratio: short alternating rounds
# so that load from elsewhere on the machine falls on both sides alike.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
binary="$here/target/release/dns-handling"
DURATION="${DURATION:-4s}"
ROUNDS="${ROUNDS:-5}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
ADMIN=bench-admin-token-0123456789
EDGE=bench-edge-token-0123456789

work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

DATABASE_URL="sqlite://$work/store.db" AUTH_TOKEN="$ADMIN" EDGE_TOKENS="edge1=$EDGE" \
  ACME_DIRECTORY=http://127.0.0.1:9/dir SERVER_ADDR="127.0.0.1:$port" LOG_LEVEL=warn \
  "$binary" >"$work/out" 2>"$work/log" &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

api() { curl -sf -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' "$@"; }
id="$(api -X POST "$base/domains" -d '{"domain_name": "bench.tokens.test"}' | jq -r .id)"
managed_admin="$(api -X POST "$base/tokens" -d '{"name": "bench", "role": "admin"}' | jq -r .secret)"
managed_edge="$(api -X POST "$base/tokens" -d '{"name": "edge2", "role": "edge"}' | jq -r .secret)"
tenant_id="$(api -X POST "$base/domains" -d '{"domain_name": "tenant.tokens.test", "tenant": "acct_bench"}' | jq -r .id)"
tenant="$(api -X POST "$base/tokens" -d '{"name": "t", "role": "tenant", "tenant": "acct_bench"}' | jq -r .secret)"

# wrk's requests/s and p99 (ms) of GET $1 with bearer $2.
load() {
  local out
  out="$(wrk --latency -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $2" "$base$1")"
  local rate p99
  rate="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  [ -z "$non2xx" ] || { echo "unexpected answers on $1: $non2xx" >&2; exit 1; }
  echo "$rate $p99"
}

compare() {
  local path="$1" environment="$2" managed="$3" label="$4"
  local ratios=()
  for round in $(seq "$ROUNDS"); do
    read -r env_rate env_p99 < <(load "$path" "$environment")
    read -r man_rate man_p99 < <(load "$path" "$managed")
    ratio="$(awk -v e="$env_rate" -v m="$man_rate" 'BEGIN {printf "%.3f", e / m}')"
    ratios+=("$ratio")
    echo "$label round $round: environment $env_rate req/s (p99 $env_p99), managed $man_rate req/s (p99 $man_p99); time per request managed/environment = $ratio"
  done
  median="$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')"
  echo "$label: median managed/environment = $median over $ROUNDS rounds"
}

curl -sf -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $managed_edge" \
  "$base/edge/certificate?server_name=unknown.bench.test" | grep -qx 204
compare "/domains/$id" "$ADMIN" "$managed_admin" "GET /domains/{id}"
compare "/edge/certificate?server_name=unknown.bench.test" "$EDGE" "$managed_edge" "GET /edge/certificate"
compare "/domains/$tenant_id" "$ADMIN" "$tenant" "GET /domains/{id} as its tenant"
