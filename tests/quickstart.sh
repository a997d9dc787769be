#!/usr/bin/env bash
# Quick start: a certificate in about a minute, entirely on this machine.
#
# Starts Pebble (Let's Encrypt's test CA) and its DNS server on loopback, starts dns-handling
# on an embedded SQLite database, takes one domain through the whole flow with the CLI
# (register, publish the ownership record, verify, issue, publish the challenge record, wait),
# prints the certificate's subject and dates, and stops everything it started.
#
#   ./tests/quickstart.sh                    # builds the release binary first
#   DNS_HANDLING_BIN=target/debug/dns-handling ./tests/quickstart.sh
#
# Needs pebble, pebble-challtestsrv, openssl, curl and python3 (Debian: apt-get install pebble
# openssl curl python3); tests/run.sh installs them and runs this script.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in pebble pebble-challtestsrv openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "quickstart: $tool is missing (apt-get install pebble openssl curl python3)" >&2; exit 1; }
done

bin="${DNS_HANDLING_BIN:-}"
if [ -z "$bin" ]; then
  echo "==> building dns-handling (release)"
  cargo build --release --locked --bin dns-handling
  bin=target/release/dns-handling
fi
bin="$(realpath "$bin")"

work="$(mktemp -d -t dns-handling-quickstart.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=tests/pebble.sh
. tests/pebble.sh
echo "==> starting Pebble and its DNS server on loopback"
start_pebble

# Publishing a record is the user's job; here the DNS server's API does it.
publish_txt() {
  curl -sf -X POST -d "{\"host\": \"$1\", \"value\": \"$2\"}" "http://127.0.0.1:$dns_api_port/set-txt" >/dev/null
  echo "    (published TXT $1 \"$2\")"
}

echo "==> starting dns-handling (SQLite in $work)"
DATABASE_URL="sqlite://$work/dns-handling.db" SERVER_ADDR=127.0.0.1:0 \
  ACME_DIRECTORY="$directory" ACME_CA_BUNDLE="$work/ca.pem" \
  DNS_NAMESERVERS="127.0.0.1:$dns_port" POLL_INTERVAL=1s CERT_KEY_TYPE=ecdsa-p256 \
  "$bin" >"$work/service.out" 2>"$work/service.log" &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q "listening on" "$work/service.out" 2>/dev/null && break
  sleep 0.1
done
server=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/service.out")
[ -n "$server" ] || { echo "quickstart: the service did not start:" >&2; cat "$work/service.log" >&2; exit 1; }
export DNS_HANDLING_SERVER="$server"
cli() { echo "\$ dns-handling domains $*" >&2; "$bin" domains "$@"; }

domain=shop.quickstart.test
echo "==> the flow, with the CLI, against $server"
added=$(cli add "$domain"); echo "$added"
id=$(sed -n 's/^Registered .* as \([^ ]*\) (.*/\1/p' <<<"$added")
record=$(sed -n 's/.*TXT record at \([^ ]*\) with the value \([^ ]*\) .*/\1 \2/p' <<<"$added")
publish_txt ${record}
cli verify "$id"
issued=$(cli issue "$id"); echo "$issued"
challenge=$(sed -n 's/.*TXT record at \([^ ]*\) with value \([^ ]*\) .*/\1 \2/p' <<<"$issued")
publish_txt ${challenge}
cli wait "$id" --timeout 2m
cli certificate "$id" > "$work/chain.pem"

echo "==> the certificate"
openssl x509 -in "$work/chain.pem" -noout -subject -issuer -dates
echo "==> done: everything started here is stopped now"
