#!/usr/bin/env bash
# Prometheus end to end against a real local cluster (`permafrost-sim up`):
# every daemon's metrics endpoint passes `promtool check metrics`; the alert
# rules pass `promtool check rules` and their unit tests; a real Prometheus
# server scrapes the cluster and loads the rules; a withdrawal moves the
# share and signing counters as its HTTP API reports them; every query of
# the Grafana dashboard evaluates. All traffic stays on 127.0.0.1.
#
# Usage: deploy/metrics-test.sh [BIN_DIR]   (default target/debug, built already)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug}"
started=$SECONDS

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "== installing Debian's prometheus package (prometheus, promtool)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
for tool in "$bin/permafrost-sim" "$bin/permafrostctl" "$bin/permafrost-node" "$bin/permafrost-coordinator"; do
    [ -x "$tool" ] || { echo "metrics-test: $tool not built (cargo build --workspace --bins)" >&2; exit 1; }
done

work="$(mktemp -d)"
up_pid=""
prom_pid=""
cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
    [ -n "$up_pid" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "metrics-test: FAILED: $*" >&2
    for f in "$work"/up.log "$work"/prometheus.log; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -n 40 "$f" >&2; }
    done
    exit 1
}

echo "== alert rules and dashboard"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["panels"], "no panels"; print("dashboard:", len(d["panels"]), "panels")' deploy/grafana/permafrost.json

echo "== permafrost-sim up"
"$bin/permafrost-sim" up --dir "$work/cluster" --bin-dir "$bin" >"$work/up.log" 2>&1 &
up_pid=$!
cluster="$work/cluster/cluster.json"
for _ in $(seq 1 240); do
    [ -f "$cluster" ] && break
    kill -0 "$up_pid" 2>/dev/null || fail "permafrost-sim up exited before the cluster was ready"
    sleep 0.5
done
[ -f "$cluster" ] || fail "no cluster.json after 120 s"
# cluster.json appears only once the cluster is ready: its key groups are in it already.
python3 - "$cluster" >"$work/targets" <<'EOF' || fail "cluster.json lacks key groups or metrics addresses"
import json, sys
c = json.load(open(sys.argv[1]))
groups = {g["name"]: g for g in c["key_groups"]}
assert groups["warm-1"]["address"] and groups["cold-1"]["address"], groups
print("coordinator", c["coordinator"]["metrics"])
for n in c["nodes"]:
    print("node", n["metrics"])
print("pay", groups["cold-1"]["address"])
EOF
pay_to="$(awk '$1=="pay"{print $2}' "$work/targets")"
sed -i '/^pay /d' "$work/targets"
grep -q "cluster ready: wrote $cluster" "$work/up.log" || sleep 1
grep -q "cluster ready: wrote $cluster" "$work/up.log" || fail "up did not say the cluster is ready"
echo "cluster ready after $((SECONDS - started)) s; $(wc -l <"$work/targets") metrics endpoints"

echo "== promtool check metrics on every endpoint"
while read -r kind addr; do
    curl -fsS "http://$addr/metrics" >"$work/page" || fail "cannot scrape $kind $addr"
    promtool check metrics <"$work/page" || fail "$kind $addr serves metrics promtool refuses"
    cat "$work/page" >>"$work/all-pages"
    echo "$kind $addr: $(grep -c '^# TYPE' "$work/page") families, promtool ok"
done <"$work/targets"

# Every metric the rules and the dashboard use is served by some daemon.
python3 - "$work/all-pages" deploy/prometheus/alerts.yml deploy/grafana/permafrost.json <<'EOF' || fail "rules or dashboard use a metric no daemon serves"
import re, sys
served = set(re.findall(r"^# TYPE (\S+)", open(sys.argv[1]).read(), re.M))
used = set()
for path in sys.argv[2:]:
    used |= set(re.findall(r"\b(permafrost_[a-z0-9_]+)", open(path).read()))
base = {re.sub(r"_(bucket|sum|count)$", "", m) if re.sub(r"_(bucket|sum|count)$", "", m) in served else m for m in used}
missing = sorted(base - served)
assert not missing, f"not served: {missing}"
print(f"rules and dashboard use {len(base)} metrics, all served")
EOF

echo "== Prometheus server scraping the cluster"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
api="http://127.0.0.1:$port/api/v1"
{
    echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
    echo "rule_files: [\"$PWD/deploy/prometheus/alerts.yml\"]"
    echo "scrape_configs:"
    echo "  - job_name: permafrost-coordinator"
    echo "    static_configs: [{targets: [\"$(awk '$1=="coordinator"{print $2}' "$work/targets")\"]}]"
    echo "  - job_name: permafrost-node"
    echo "    static_configs: [{targets: [$(awk '$1=="node"{printf "%s\"%s\"", (n++ ? ", " : ""), $2}' "$work/targets")]}]"
} >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null || fail "generated prometheus.yml is invalid"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/prometheus.log" 2>&1 &
prom_pid=$!

# query EXPR: the first sample's value of an instant query ("none" if empty).
query() {
    curl -fsS --get "$api/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["status"] == "success", d
r = d["data"]["result"]
print(r[0]["value"][1] if r else "none")'
}
wait_for() { # EXPR WANT SECONDS: until query EXPR prints WANT
    for _ in $(seq 1 $(($3 * 4))); do
        [ "$(query "$1" 2>/dev/null || true)" = "$2" ] && return 0
        sleep 0.25
    done
    fail "$1 is $(query "$1" 2>/dev/null || echo '?') after $3 s, expected $2"
}
targets=$(wc -l <"$work/targets")
wait_for 'sum(up{job=~"permafrost-.*"})' "$targets" 30
echo "Prometheus scrapes all $targets daemons"

shares='sum(permafrost_node_signature_shares_released_total{kind="withdrawal"})'
signed='sum(permafrost_coordinator_withdrawals_total{outcome="signed"})'
wait_for "$shares" 0 10
before_latency="$(query 'sum(permafrost_coordinator_signing_duration_seconds_count{outcome="signed"})')"

echo "== a withdrawal through the cluster"
# warm-1 is a taproot group: a transaction spending one (synthetic) coin of
# it pays cold-1's address, the change going back to warm-1.
coin="$(printf '%064d' 7):0:100000000"
"$bin/permafrostctl" withdraw --cluster "$cluster" --group warm-1 --tier warm \
    --to "$pay_to" --amount 50000000 --utxo "$coin" --fee-rate 2 >"$work/withdraw.out" 2>&1 \
    || { cat "$work/withdraw.out" >&2; fail "withdrawal did not sign"; }
grep -qi "signed" "$work/withdraw.out" || { cat "$work/withdraw.out" >&2; fail "withdrawal not reported signed"; }
# warm-1 is 2-of-3 and a transaction input is one FROST session: at least
# 2 shares per input (more if a slow signer's session was hedged, ROAST).
# Prometheus scrapes each node on its own schedule: wait for the signers'
# counters to show up, not just the first one.
wait_for "$signed" 1 15
at_least_threshold() { python3 -c 'import sys; n=float(sys.argv[1]); assert n >= 2, n' "$1" 2>/dev/null; }
for _ in $(seq 1 60); do
    moved="$(query "$shares")"
    [ "$moved" != "none" ] && at_least_threshold "$moved" && break
    sleep 0.25
done
[ "$moved" != "0" ] && [ "$moved" != "none" ] || fail "$shares did not move after the withdrawal"
at_least_threshold "$moved" \
    || fail "$shares is $moved after 15 s, expected at least the threshold 2"
after_latency="$(query 'sum(permafrost_coordinator_signing_duration_seconds_count{outcome="signed"})')"
[ "$after_latency" != "$before_latency" ] || fail "the signing latency histogram did not move"
echo "after one withdrawal: $shares = $moved, $signed = 1, signing latency observations $before_latency -> $after_latency"

echo "== rules loaded and every dashboard query evaluates"
curl -fsS "$api/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") not in ("ok", "unknown")]
assert len(rules) >= 10 and not bad, (len(rules), bad)
print(len(rules), "alert rules loaded and healthy")' || fail "Prometheus did not load the alert rules cleanly"
python3 - "$api" deploy/grafana/permafrost.json <<'EOF' || fail "a dashboard query does not evaluate"
import json, sys, urllib.parse, urllib.request
api, path = sys.argv[1], sys.argv[2]
exprs = [t["expr"] for p in json.load(open(path))["panels"] for t in p.get("targets", [])]
for e in exprs:
    q = e.replace("$__rate_interval", "1m").replace("$__range", "5m")
    url = f"{api}/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        d = json.load(r)
    assert d["status"] == "success", (e, d)
print(len(exprs), "dashboard queries evaluate")
EOF

echo "metrics-test: ok in $((SECONDS - started)) s"
