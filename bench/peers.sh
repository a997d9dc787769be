#!/usr/bin/env bash
# Run: bench/peers.sh   (as root; env N=20, CLIENTS="lego uacme certbot", KEEP=1 keeps the work dir; needs pebble, lego, uacme, certbot from Debian)
#
# Re-measures the peer ACME clients of the performance issue against Pebble on this machine.
#
# Starts pebble-challtestsrv (DNS on loopback, TXT records set through its management API) and
# Pebble (PEBBLE_VA_NOSLEEP=1, no nonce rejection), like tests/quickstart.sh. Each client solves
# DNS-01 through a hook that publishes the TXT record with challtestsrv's /set-txt and removes it
# with /clear-txt, and asks for an RSA-2048 certificate key. For each client:
#   * one warm-up certificate (untimed) creates the ACME account, so the timed runs measure
#     issuance with an existing account, as the service does;
#   * sequential: N certificates one after the other (p<i>.<client>-seq.example.test);
#   * parallel:   N client processes started at once, then waited for (p<i>.<client>-par.example.test).
# Wall time gives certificates/s; CPU is the user+system time of every client process and its
# children (hooks included: a /bin/sh and a curl per record) from /usr/bin/time, summed, divided by N.
# A mode counts as successful only if all N certificate files exist; failures are reported.
#
# Trusting Pebble's throwaway HTTPS CA:
#   lego:    LEGO_CA_CERTIFICATES=<ca.pem>
#   certbot: REQUESTS_CA_BUNDLE=<ca.pem>
#   uacme:   has neither a CA option nor a skip-verification option (1.7.4; libcurl-gnutls with the
#            compiled-in CA path /etc/ssl/certs), so each uacme process runs in its own mount
#            namespace (unshare -m) where a directory holding only the throwaway CA is bind-mounted
#            over /etc/ssl/certs. The host's /etc/ssl/certs is not touched. Needs root.
#
# Client defaults are kept (e.g. lego's exec provider waits EXEC_POLLING_INTERVAL=2 s before its
# propagation check); --dns.disable-cp and --dns.resolvers point lego's own check at challtestsrv.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
N="${N:-20}"
CLIENTS="${CLIENTS:-lego uacme certbot}"

if [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg_tool in pebble:pebble pebble:pebble-challtestsrv lego:lego uacme:uacme certbot:certbot \
                  openssl:openssl curl:curl python3:python3 time:/usr/bin/time util-linux:unshare; do
    command -v "${pkg_tool#*:}" >/dev/null || missing+=("${pkg_tool%%:*}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble lego uacme certbot openssl curl python3 time util-linux >/dev/null
  fi
fi
for tool in pebble pebble-challtestsrv openssl curl python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "peers: $tool is missing (apt-get install pebble openssl curl python3 time)" >&2; exit 1; }
done

work="$(mktemp -d -t dns-handling-peers.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "peers: work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

# shellcheck source=tests/pebble.sh
. "$here/../tests/pebble.sh"
echo "==> starting Pebble and pebble-challtestsrv on loopback (work dir $work)"
start_pebble

# ---- DNS-01 hooks: all go through challtestsrv's management API --------------------------------
cat > txt.sh <<EOF
#!/bin/sh
# txt.sh set HOST VALUE | txt.sh clear HOST   (HOST fully qualified, with or without the final dot)
host="\${2%.}."
case "\$1" in
  set)   exec curl -sf -X POST -d "{\"host\":\"\$host\",\"value\":\"\$3\"}" http://127.0.0.1:$dns_api_port/set-txt ;;
  clear) exec curl -sf -X POST -d "{\"host\":\"\$host\"}" http://127.0.0.1:$dns_api_port/clear-txt ;;
esac
exit 2
EOF
# lego exec provider: EXEC_PATH present|cleanup FQDN VALUE (FQDN is _acme-challenge.NAME.)
cat > lego-hook.sh <<EOF
#!/bin/sh
case "\$1" in
  present) exec $work/txt.sh set "\$2" "\$3" ;;
  cleanup) exec $work/txt.sh clear "\$2" ;;
esac
exit 0
EOF
# uacme: hook begin|done|failed TYPE IDENT TOKEN AUTH (AUTH for dns-01 is already base64url(sha256))
cat > uacme-hook.sh <<EOF
#!/bin/sh
[ "\$2" = dns-01 ] || exit 1
case "\$1" in
  begin)       exec $work/txt.sh set "_acme-challenge.\$3" "\$5" ;;
  done|failed) exec $work/txt.sh clear "_acme-challenge.\$3" ;;
esac
exit 1
EOF
# certbot manual hooks: CERTBOT_DOMAIN, CERTBOT_VALIDATION
printf '#!/bin/sh\nexec %s/txt.sh set "_acme-challenge.$CERTBOT_DOMAIN" "$CERTBOT_VALIDATION"\n' "$work" > certbot-auth.sh
printf '#!/bin/sh\nexec %s/txt.sh clear "_acme-challenge.$CERTBOT_DOMAIN"\n' "$work" > certbot-cleanup.sh
chmod +x txt.sh lego-hook.sh uacme-hook.sh certbot-auth.sh certbot-cleanup.sh

# uacme's trust store inside its mount namespace: only the throwaway CA.
mkdir -p uacme-trust
cp ca.pem uacme-trust/ca.pem
cp ca.pem uacme-trust/ca-certificates.crt

# ---- one client run: run_one CLIENT NAME SLOTDIR TIMEFILE --------------------------------------
# Output goes to SLOTDIR.log; exit status is the client's.
run_one() {
  local client=$1 name=$2 dir=$3 tf=$4
  local timed=(/usr/bin/time -f "%U %S" -o "$tf")
  case "$client" in
    lego)
      LEGO_CA_CERTIFICATES="$work/ca.pem" EXEC_PATH="$work/lego-hook.sh" \
        "${timed[@]}" lego --path "$dir" --server "$directory" --accept-tos --email a@b.test \
          --key-type rsa2048 --dns exec --dns.resolvers "127.0.0.1:$dns_port" --dns.disable-cp \
          --domains "$name" run ;;
    uacme)
      # shellcheck disable=SC2016
      unshare -m --propagation private sh -c 'mount --bind "$0" /etc/ssl/certs && exec "$@"' \
        "$work/uacme-trust" "${timed[@]}" uacme -v -y -o -a "$directory" -c "$dir" -t RSA -b 2048 \
          -h "$work/uacme-hook.sh" issue "$name" ;;
    certbot)
      REQUESTS_CA_BUNDLE="$work/ca.pem" \
        "${timed[@]}" certbot certonly --non-interactive --agree-tos -m a@b.test --no-eff-email \
          --server "$directory" --config-dir "$dir/config" --work-dir "$dir/work" --logs-dir "$dir/logs" \
          --manual --preferred-challenges dns \
          --manual-auth-hook "$work/certbot-auth.sh" --manual-cleanup-hook "$work/certbot-cleanup.sh" \
          --key-type rsa --rsa-key-size 2048 -d "$name" ;;
  esac
}
cert_path() { # cert_path CLIENT NAME DIR
  case "$1" in
    lego)    echo "$3/certificates/$2.crt" ;;
    uacme)   echo "$3/$2/cert.pem" ;;
    certbot) echo "$3/config/live/$2/cert.pem" ;;
  esac
}
client_version() { # the Debian package's version (lego --version says "dev")
  dpkg-query -W -f '${Version}' "$1" 2>/dev/null && return
  case "$1" in
    lego)    lego --version 2>&1 | awk '{print $3}' ;;
    uacme)   { uacme -V 2>&1 || true; } | sed -n '1s/.*version \([^ ]*\).*/\1/p' ;;
    certbot) certbot --version 2>&1 | awk '{print $2}' ;;
  esac
}

# Account set-up (untimed): a warm-up certificate in a directory that the timed runs copy (certbot,
# which locks its directories, gets one copy per process) or share (lego --path, uacme -c).
setup_client() { # setup_client CLIENT -> directory with a registered account
  local client=$1 dir="$work/$1/account"
  mkdir -p "$dir"
  if [ "$client" = uacme ]; then # uacme registers the account with a separate command
    # shellcheck disable=SC2016
    unshare -m --propagation private sh -c 'mount --bind "$0" /etc/ssl/certs && exec "$@"' \
      "$work/uacme-trust" uacme -v -y -a "$directory" -c "$dir" -t RSA -b 2048 new a@b.test \
      >"$work/$client/new.log" 2>&1 \
      || { echo "peers: uacme new failed:" >&2; tail -20 "$work/$client/new.log" >&2; return 1; }
  fi
  run_one "$client" "warmup.$client.example.test" "$dir" "$work/$client/warmup.time" >"$work/$client/warmup.log" 2>&1 \
    && [ -s "$(cert_path "$client" "warmup.$client.example.test" "$dir")" ] \
    || { echo "peers: $client warm-up failed; see below" >&2; tail -20 "$work/$client/warmup.log" >&2; return 1; }
  echo "$dir"
}
slot_dir() { # slot_dir CLIENT ACCOUNTDIR MODE I
  if [ "$1" = certbot ]; then
    local d="$work/certbot/$3-$4"; cp -a "$2" "$d"; echo "$d"
  else
    echo "$2"
  fi
}

results="$work/results.tsv"
: > "$results"
measure() { # measure CLIENT ACCOUNTDIR MODE
  local client=$1 account=$2 mode=$3 i dirs=() names=() cpids=() t0 t1 ok=0 failed=()
  mkdir -p "$work/$client/$mode"
  for i in $(seq 1 "$N"); do
    names+=("p$i.$client-$mode.example.test")
    dirs+=("$(slot_dir "$client" "$account" "$mode" "$i")")
  done
  t0=$(date +%s.%N)
  if [ "$mode" = seq ]; then
    for i in $(seq 0 $((N - 1))); do
      run_one "$client" "${names[$i]}" "${dirs[$i]}" "$work/$client/$mode/$i.time" \
        >"$work/$client/$mode/$i.log" 2>&1 || true
    done
  else
    for i in $(seq 0 $((N - 1))); do
      run_one "$client" "${names[$i]}" "${dirs[$i]}" "$work/$client/$mode/$i.time" \
        >"$work/$client/$mode/$i.log" 2>&1 &
      cpids+=($!); pids+=($!)
    done
    for pid in "${cpids[@]}"; do wait "$pid" || true; done
  fi
  t1=$(date +%s.%N)
  for i in $(seq 0 $((N - 1))); do
    local cert; cert=$(cert_path "$client" "${names[$i]}" "${dirs[$i]}")
    if [ -s "$cert" ] && openssl x509 -in "$cert" -noout 2>/dev/null; then
      ok=$((ok + 1))
    else
      failed+=("${names[$i]}")
      echo "peers: $client $mode: no certificate for ${names[$i]}; log tail:" >&2
      tail -5 "$work/$client/$mode/$i.log" | sed 's/^/    /' >&2
    fi
  done
  # RSA-2048 check on the first certificate of the mode.
  local first; first=$(cert_path "$client" "${names[0]}" "${dirs[0]}")
  if [ -s "$first" ]; then
    openssl x509 -in "$first" -noout -text | grep -q 'Public-Key: (2048 bit)' \
      && openssl x509 -in "$first" -noout -text | grep -q 'rsaEncryption' \
      || echo "peers: $client $mode: ${names[0]} is not RSA-2048" >&2
  fi
  local cpu; cpu=$(cat "$work/$client/$mode"/*.time 2>/dev/null | awk '$1 ~ /^[0-9.]+$/ {s += $1 + $2} END {printf "%.3f", s}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$client" "$mode" "$ok" "$(python3 -c "print(round($t1 - $t0, 3))")" "$cpu" "${failed[*]:-}" >> "$results"
  echo "    $client $mode: $ok/$N certificates in $(python3 -c "print(round($t1 - $t0, 2))") s, CPU $cpu s"
}

echo "==> load: $(uptime)"
echo "==> N=$N, clients: $CLIENTS, $(nproc) CPUs"
declare -A versions
for client in $CLIENTS; do
  command -v "$client" >/dev/null || { echo "peers: $client is not installed, skipped" >&2; continue; }
  versions[$client]=$(client_version "$client")
  echo "==> $client ${versions[$client]}"
  mkdir -p "$work/$client"
  account=$(setup_client "$client") || continue
  measure "$client" "$account" seq
  measure "$client" "$account" par
done
echo "==> load after: $(uptime)"

echo
echo "N=$N, RSA-2048, DNS-01 via pebble-challtestsrv, Pebble with PEBBLE_VA_NOSLEEP=1"
python3 - "$results" "$N" "$(declare -p versions)" <<'EOF'
import sys, re
path, n = sys.argv[1], int(sys.argv[2])
versions = dict(re.findall(r'\[(\w+)\]="([^"]*)"', sys.argv[3]))
rows = {}
for line in open(path):
    client, mode, ok, wall, cpu, failed = line.rstrip("\n").split("\t")
    rows.setdefault(client, {})[mode] = (int(ok), float(wall), float(cpu), failed)
def rate(r):
    ok, wall, _, _ = r
    s = f"{ok / wall:.2f}"
    return s if ok == n else f"{s} ({n - ok} FAILED)"
hdr = ("client", "version", "certs/s sequential", f"certs/s {n} at once", "CPU s/cert seq", f"CPU s/cert {n} at once")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for client, modes in rows.items():
    seq, par = modes.get("seq"), modes.get("par")
    cells = [client, versions.get(client, "?"),
             rate(seq) if seq else "-", rate(par) if par else "-",
             f"{seq[2] / n:.3f}" if seq else "-", f"{par[2] / n:.3f}" if par else "-"]
    print("| " + " | ".join(cells) + " |")
for client, modes in rows.items():
    for mode, (ok, wall, cpu, failed) in modes.items():
        print(f"{client} {mode}: {ok}/{n} in {wall:.2f} s, CPU {cpu:.2f} s" + (f", failed: {failed}" if failed else ""))
EOF
