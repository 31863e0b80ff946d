#!/bin/sh
# The compose cluster's one-shot init, run by the `init` service (no network,
# as root only to hand each file to its owner). The same steps as
# docs/runbook-key-ceremony.md, on one machine instead of several:
#
#   1. CA, offline, in its own volume that no daemon mounts (ca init)
#   2. custody request-signing key and approver keys; the withdrawal policy;
#      the ceremony operators' keys and the quorum every daemon holds
#   3. per node: passphrase, config, `permafrost-node init` on its data volume
#      (identity, encryption and TLS keys sealed), CSR signed by the CA
#   4. the manifest (ids, regions, endpoints, public keys) copied to every daemon
#   5. coordinator certificate and config; health-probe certificates
#   6. custody and operator client certificates, cluster.json for the host
#
# Layout written to /cluster (the compose file's PERMAFROST_CLUSTER_DIR):
#   n1/ .. n5/, coordinator/   mounted read-only at /etc/permafrost
#   secrets/                   passphrases and the coordinator TLS key (compose secrets)
#   client/                    cluster.json (host), cluster.internal.json (ctl service),
#                              CA cert, custody and operator credentials, approver keys
#   manifest.json, policy.toml, fingerprints.txt
#
# And to /operators (PERMAFROST_OPERATORS_DIR, beside the cluster dir, never
# mounted by a daemon or the ctl service): operator-1..3.key (0600) and .pub,
# the keys that approve ceremonies; any 2 of the 3 approve one.
set -eu

C=/cluster
CA=/ca
OPS=/operators
PF_UID=10001
HOST_UID="${HOST_UID:-0}"
HOST_GID="${HOST_GID:-0}"
PORT="${PERMAFROST_COORDINATOR_PORT:-17443}"
NODES="n1:eu-west n2:eu-west n3:us-east n4:us-east n5:ap-south"
COORD=coord-1
CUSTODY=custody-1
OPERATOR=operator-1
APPROVERS="approver-1 approver-2 approver-3"
OPERATORS="operator-1 operator-2 operator-3"
OPERATOR_QUORUM=2

say() { echo "init: $*"; }
die() { echo "init: $*" >&2; exit 1; }

if [ -e "$C/client/cluster.json" ]; then
    say "$C/client/cluster.json exists: already initialized, nothing to do"
    exit 0
fi
[ -e "$CA/ca.key" ] && die "the CA volume already holds a CA but $C has no cluster.json: a half-finished init; reset (./init.sh --reset) and run again"
[ -d "$OPS" ] || die "$OPS is not mounted (the operators' directory, PERMAFROST_OPERATORS_DIR)"
[ -z "$(ls -A "$OPS" 2>/dev/null)" ] \
    || die "the operators' directory already holds files but $C has no cluster.json: a half-finished init, or another cluster's keys; reset (./init.sh --reset) or point PERMAFROST_OPERATORS_DIR elsewhere"
for spec in $NODES; do
    id="${spec%%:*}"
    [ -z "$(ls -A "/nodes/$id" 2>/dev/null)" ] \
        || die "the data volume of $id is not empty: refusing to initialize over it (./init.sh --reset starts over)"
done

umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$C/secrets" "$C/client/approvers" "$C/coordinator"
chmod 0755 "$C" "$C/coordinator"
chmod 0700 "$C/secrets"

# 1. CA (offline: this container has no network)
permafrostctl ca init --dir "$CA" --name "Permafrost compose cluster CA" >/dev/null
install -m 0644 "$CA/ca.pem" "$C/client/ca.pem"
say "CA created in its own volume (ca.key never leaves it)"

# 2. custody key, approvers, policy
permafrostctl custody-key generate --out "$C/client/custody-signing.key" >/dev/null
custody_pub="$(permafrostctl custody-key public --key "$C/client/custody-signing.key" | tr -d '[:space:]')"
printf '%s\n' "$custody_pub" > "$C/client/custody-signing.pub"
approvers_toml=""
for a in $APPROVERS; do
    permafrostctl approver-key generate --out "$C/client/approvers/$a.key" >/dev/null
    pub="$(permafrostctl approver-key public --key "$C/client/approvers/$a.key" | tr -d '[:space:]')"
    approvers_toml="$approvers_toml$a = \"$pub\"
"
done
cat > "$C/policy.toml" <<EOF
# Withdrawal policy of the compose cluster (written by deploy/compose/init).
# Every node enforces its own copy; see docs/policy.md. Both groups hold
# bitcoin (regtest): every node decodes each withdrawal's PSBT and applies
# these limits to what it pays (payments + fee).

[approvers]
$approvers_toml
# Warm: automated up to 1 BTC per request, one approval up to 2 BTC;
# 5 BTC per rolling 24 h per node.
[groups.warm-1]
tier = "warm"
scheme = "taproot"
network = "regtest"
max_fee_sat = 100000
max_fee_rate_sat_vb = 100
max_lifetime_secs = 86400

[groups.warm-1.assets.BTC]
per_request_max = "200000000"
daily_max = "500000000"
bands = [{ up_to = "100000000", approvals = 0 }]
approvals_above = 1

# Hot: small automated payments only.
[groups.hot-1]
tier = "hot"
scheme = "taproot"
network = "regtest"
max_fee_sat = 20000
max_fee_rate_sat_vb = 50
max_lifetime_secs = 3600

[groups.hot-1.assets.BTC]
per_request_max = "10000000"
daily_max = "50000000"
bands = [{ up_to = "10000000", approvals = 0 }]
approvals_above = 1

# A cold group allowlists warm-1's own address, known only once warm-1 exists
# (permafrostctl keygroup address --name warm-1): add [groups.cold-1] then
# (tier cold, min_approvals 2, time_lock_secs, allowlist; docs/policy.md),
# give every node and the coordinator the new policy and restart them.
EOF
chmod 0644 "$C/policy.toml"
say "custody key ${custody_pub%"${custody_pub#????????????????}"}..., 3 approver keys, policy written"

# Ceremony operators: each keeps their own key (here all three land in the
# operators' directory, which no daemon mounts). The registry goes last into
# every node's and the coordinator's config, byte for byte the same, so its
# hash in fingerprints.txt can be compared on every host.
chmod 0700 "$OPS"
{
    echo "[operators]"
    echo "default_quorum = $OPERATOR_QUORUM"
    echo
    echo "[operators.keys]"
} > "$tmp/operators.toml"
for o in $OPERATORS; do
    permafrostctl operator-key generate --out "$OPS/$o.key" >/dev/null
    pub="$(permafrostctl operator-key public --key "$OPS/$o.key" | tr -d '[:space:]')"
    printf '%s\n' "$pub" > "$OPS/$o.pub"
    chmod 0644 "$OPS/$o.pub"
    echo "$o = \"$pub\"" >> "$tmp/operators.toml"
done
chown -R "$HOST_UID:$HOST_GID" "$OPS"
say "3 operator keys in the operators' directory; a quorum of $OPERATOR_QUORUM of them in every daemon's config"

# 3. nodes
: > "$tmp/entries"
for spec in $NODES; do
    id="${spec%%:*}"
    region="${spec#*:}"
    d="$C/$id"
    mkdir -p "$d/probe"
    chmod 0755 "$d" "$d/probe"
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$C/secrets/$id-passphrase"

    # The config the node runs with (paths inside its container).
    cat > "$d/node.toml" <<EOF
id = "$id"
region = "$region"
listen = "0.0.0.0:7443"
data_dir = "/var/lib/permafrost"
manifest = "/etc/permafrost/manifest.json"
policy = "/etc/permafrost/policy.toml"
custody_keys = ["$custody_pub"]

[tls]
ca_cert = "/etc/permafrost/ca.pem"
cert = "/etc/permafrost/$id.pem"

[sealer]
kind = "passphrase"
passphrase_file = "/run/secrets/passphrase"

# Ceremony operators (docs/ceremony-spec.md): every key-lifecycle ceremony needs
# a spec approved by $OPERATOR_QUORUM of these keys, and this node checks it itself.
# From here to the end, the same bytes in every daemon's config (fingerprints.txt).
EOF
    cat "$tmp/operators.toml" >> "$d/node.toml"
    chmod 0644 "$d/node.toml"
    # The same config with this container's paths, for `init` only.
    sed -e "s|^data_dir = .*|data_dir = \"/nodes/$id\"|" \
        -e "s|^passphrase_file = .*|passphrase_file = \"$C/secrets/$id-passphrase\"|" \
        "$d/node.toml" > "$tmp/$id-init.toml"
    chmod 0700 "/nodes/$id"
    permafrost-node init --config "$tmp/$id-init.toml" > "$tmp/$id.json" 2> "$tmp/$id.err" \
        || { cat "$tmp/$id.err" >&2; die "permafrost-node init failed for $id"; }
    chown -R "$PF_UID:$PF_UID" "/nodes/$id"

    # The CA takes only the key from the CSR; role and id come from here.
    jq -r .tls_csr "$tmp/$id.json" > "$tmp/$id.csr"
    permafrostctl cert issue --ca-dir "$CA" --role node --id "$id" --csr "$tmp/$id.csr" --out-dir "$d" >/dev/null
    chmod 0644 "$d/$id.pem"
    jq -c --arg endpoint "$id:7443" --arg name "$id.node.permafrost" \
        '{id, region, endpoint: $endpoint, tls_server_name: $name, identity_key, encryption_key}' \
        "$tmp/$id.json" >> "$tmp/entries"
    say "$id ($region) initialized: keys sealed in its volume, certificate issued from its CSR"
done

# 4. manifest, to every daemon
jq -s '{nodes: .}' "$tmp/entries" > "$C/manifest.json"
chmod 0644 "$C/manifest.json"

# 5. coordinator
permafrostctl cert issue --ca-dir "$CA" --role coordinator --id "$COORD" --out-dir "$tmp/coord" >/dev/null
install -m 0644 "$tmp/coord/$COORD.pem" "$C/coordinator/$COORD.pem"
install -m 0400 -o "$PF_UID" -g "$PF_UID" "$tmp/coord/$COORD.key" "$C/secrets/$COORD.key"
cat > "$C/coordinator/coordinator.toml" <<EOF
id = "$COORD"
listen = "0.0.0.0:7443"
data_dir = "/var/lib/permafrost"
manifest = "/etc/permafrost/manifest.json"
policy = "/etc/permafrost/policy.toml"
custody_keys = ["$custody_pub"]
# Probe members every 0.5 s so a lost region is known within a second or two.
health_interval_ms = 500

[tls]
ca_cert = "/etc/permafrost/ca.pem"
cert = "/etc/permafrost/$COORD.pem"
key = "/run/secrets/tls.key"

# The nodes' operator registry (docs/ceremony-spec.md): the coordinator refuses
# at once a spec they would refuse. The same bytes to the end as theirs.
EOF
cat "$tmp/operators.toml" >> "$C/coordinator/coordinator.toml"
chmod 0644 "$C/coordinator/coordinator.toml"
mkdir -p "$C/coordinator/probe"
chmod 0755 "$C/coordinator/probe"

# Shared files, and a health-probe certificate per daemon (role node, an id
# that is no node: no service admits it beyond health and reflection).
for d in $(for s in $NODES; do echo "${s%%:*}"; done) coordinator; do
    install -m 0644 "$CA/ca.pem" "$C/$d/ca.pem"
    install -m 0644 "$C/manifest.json" "$C/$d/manifest.json"
    install -m 0644 "$C/policy.toml" "$C/$d/policy.toml"
    probe_id="probe-$d"
    [ "$d" = coordinator ] && probe_id="probe-$COORD"
    permafrostctl cert issue --ca-dir "$CA" --role node --id "$probe_id" --out-dir "$tmp/probe" >/dev/null
    install -m 0644 "$CA/ca.pem" "$C/$d/probe/ca.pem"
    install -m 0644 "$tmp/probe/$probe_id.pem" "$C/$d/probe/probe.pem"
    install -m 0400 -o "$PF_UID" -g "$PF_UID" "$tmp/probe/$probe_id.key" "$C/$d/probe/probe.key"
done
for spec in $NODES; do
    id="${spec%%:*}"
    chown "$PF_UID:$PF_UID" "$C/secrets/$id-passphrase"
    chmod 0400 "$C/secrets/$id-passphrase"
done

# 6. clients
permafrostctl cert issue --ca-dir "$CA" --role custody --id "$CUSTODY" --out-dir "$C/client" >/dev/null
permafrostctl cert issue --ca-dir "$CA" --role operator --id "$OPERATOR" --out-dir "$C/client" >/dev/null
nodes_json="$(jq -c '[.nodes[] | {id, region, endpoint}]' "$C/manifest.json")"
cluster_file() { # endpoint -> cluster.json on stdout
    jq -n --arg endpoint "$1" --arg pub "$custody_pub" --argjson nodes "$nodes_json" '{
        coordinator: {endpoint: $endpoint, tls_server_name: "coord-1.coordinator.permafrost"},
        ca_cert: "ca.pem",
        custody: {cert: "custody-1.pem", key: "custody-1.key",
                  signing_key: "custody-signing.key", signing_public_key: $pub},
        operator: {cert: "operator-1.pem", key: "operator-1.key"},
        nodes: $nodes,
        key_groups: []
    }'
}
cluster_file "coordinator:7443" > "$C/client/cluster.internal.json"
cluster_file "127.0.0.1:$PORT" > "$C/client/cluster.json"
chmod 0644 "$C/client/cluster.json" "$C/client/cluster.internal.json" "$C/client/custody-signing.pub" \
    "$C/client/$CUSTODY.pem" "$C/client/$OPERATOR.pem"
chown -R "$HOST_UID:$HOST_GID" "$C/client"

# What each node operator confirms out of band (runbook: manifest distribution).
{
    echo "manifest sha256: $(sha256sum "$C/manifest.json" | cut -d' ' -f1)"
    echo "policy sha256:   $(sha256sum "$C/policy.toml" | cut -d' ' -f1)"
    echo "CA sha256:       $(sha256sum "$CA/ca.pem" | cut -d' ' -f1)"
    # The operator registry ends every daemon's config; on any host:
    #   sed -n '/^\[operators\]$/,$p' node.toml | sha256sum
    echo "operators sha256: $(sha256sum "$tmp/operators.toml" | cut -d' ' -f1) (quorum $OPERATOR_QUORUM of 3)"
    for o in $OPERATORS; do
        echo "operator $o key $(cat "$OPS/$o.pub")"
    done
    jq -r '.nodes[] | "node \(.id) (\(.region)) identity key \(.identity_key)"' "$C/manifest.json"
} > "$C/fingerprints.txt"
chmod 0644 "$C/fingerprints.txt"
chown "$HOST_UID:$HOST_GID" "$C" "$C/fingerprints.txt" "$C/manifest.json" "$C/policy.toml"
cat "$C/fingerprints.txt"
say "done: start it with docker-compose up -d; clients use cluster/client/cluster.json (coordinator on 127.0.0.1:$PORT); the operators keep their keys (operators/)"
