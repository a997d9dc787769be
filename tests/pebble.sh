# Sourced by tests/quickstart.sh and bench/peers.sh: starts Pebble (Let's Encrypt's test CA) and
# pebble-challtestsrv (its DNS server) on free loopback ports.
#
# The caller sets `work` (a directory for certificates, configuration and logs) and the array
# `pids` (the processes to stop on exit), then calls `start_pebble`, which sets:
#   acme_port, dns_port (DNS-01 answers), dns_api_port (challtestsrv's management API),
#   directory (the ACME directory URL) and $work/ca.pem (the root Pebble's HTTPS chains to).

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1 ($2); see $work/*.log" >&2
  exit 1
}

start_pebble() {
  # Pebble serves HTTPS: give it a throwaway CA and a certificate for 127.0.0.1.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=throwaway test CA" -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$work/pebble-key.pem" -out "$work/pebble.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$work/san.ext"
  openssl x509 -req -in "$work/pebble.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -CAcreateserial -days 1 -extfile "$work/san.ext" -out "$work/pebble-cert.pem" 2>/dev/null

  acme_port=$(free_port); dns_port=$(free_port); dns_api_port=$(free_port)
  cat > "$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme_port", "managementListenAddress": "127.0.0.1:$(free_port)",
  "certificate": "$work/pebble-cert.pem", "privateKey": "$work/pebble-key.pem",
  "httpPort": $(free_port), "tlsPort": $(free_port), "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
  pebble-challtestsrv -dns01 "127.0.0.1:$dns_port" -management "127.0.0.1:$dns_api_port" \
    -http01 "" -https01 "" -tlsalpn01 "" >"$work/challtestsrv.log" 2>&1 &
  pids+=($!)
  wait_for_port "$dns_api_port" pebble-challtestsrv
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config "$work/pebble.json" \
    -dnsserver "127.0.0.1:$dns_port" >"$work/pebble.log" 2>&1 &
  pids+=($!)
  wait_for_port "$acme_port" pebble
  directory="https://127.0.0.1:$acme_port/dir"
}
