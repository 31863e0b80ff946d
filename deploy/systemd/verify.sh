#!/usr/bin/env bash
# Checks the systemd units and example configs beside this file:
#   - `systemd-analyze verify` on each unit, in a scratch root that holds the
#     daemon binaries at the units' ExecStart paths (verify refuses a unit
#     whose binary does not exist); any message at all is a failure, since
#     verify exits 0 on unknown or unparsable settings
#   - `systemd-analyze security --offline`: exposure level at most 2.0
#   - node.toml parsed and validated by the real permafrost-node (`init` into
#     a scratch data dir with a throwaway passphrase, its placeholders replaced
#     by valid keys), also as a manually sealed node (`init
#     --unseal-passphrase-file`), and refused with the operator placeholders
#     left in
#   - coordinator.toml holds the same [operators] registry as node.toml
#
# Usage: deploy/systemd/verify.sh --bin-dir DIR   (permafrost-node, permafrost-coordinator)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="$2"; shift 2 ;;
        *) echo "verify.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$bin_dir" ] && [ -x "$bin_dir/permafrost-node" ] && [ -x "$bin_dir/permafrost-coordinator" ] \
    || { echo "verify.sh: --bin-dir DIR with permafrost-node and permafrost-coordinator" >&2; exit 2; }
command -v systemd-analyze >/dev/null \
    || { echo "verify.sh: systemd-analyze not found (apt-get install -y systemd)" >&2; exit 1; }

units=(permafrost-node.service permafrost-coordinator.service)
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp "$bin_dir/permafrost-node" "$bin_dir/permafrost-coordinator" "$root/usr/local/bin/"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
for u in "${units[@]}"; do cp "$here/$u" "$root/etc/systemd/system/$u"; done

status=0
for u in "${units[@]}"; do
    msgs="$(systemd-analyze verify --man=no --generators=no --root="$root" "$u" 2>&1)" && rc=0 || rc=$?
    if [ "$rc" -ne 0 ] || [ -n "$msgs" ]; then
        echo "FAIL systemd-analyze verify $u:"; echo "$msgs"; status=1
    else
        echo "ok   systemd-analyze verify $u"
    fi
    if level="$(systemd-analyze security --offline=yes --root="$root" --threshold=20 "$u" 2>&1 \
            | sed -n 's/.*Overall exposure level for [^:]*: *//p')"; then
        echo "ok   systemd-analyze security $u: exposure $level"
    else
        echo "FAIL systemd-analyze security $u: exposure ${level:-?} (at most 2.0 allowed)"; status=1
    fi
done

# node.toml through the node's own parser and validation.
scratch="$root/node-check"
mkdir -p "$scratch"
printf 'throwaway-passphrase-for-config-check\n' > "$scratch/passphrase"
# Any valid Ed25519 public keys will do for parsing (RFC 8032 test vectors 1,
# 2, 3 and "1024"; distinct, as the operator registry insists), never for use.
key="d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
alice="3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
bob="fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025"
carol="278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e"
scratch_config() { # data_dir_name -> node.toml with this scratch's paths, placeholders kept
    sed -e "s|^data_dir = .*|data_dir = \"$scratch/$1\"|" \
        -e "s|^passphrase_file = .*|passphrase_file = \"$scratch/passphrase\"|" \
        -e "s|REPLACE_CUSTODY_PUBLIC_KEY|$key|" \
        "$here/node.toml"
}
with_operators() {
    sed -e "s|REPLACE_OPERATOR_ALICE_PUBLIC_KEY|$alice|" -e "s|REPLACE_OPERATOR_BOB_PUBLIC_KEY|$bob|" \
        -e "s|REPLACE_OPERATOR_CAROL_PUBLIC_KEY|$carol|"
}
scratch_config data | with_operators > "$scratch/node.toml"
if out="$("$bin_dir/permafrost-node" init --config "$scratch/node.toml" 2>&1)" \
        && grep -q '"tls_csr"' <<<"$out"; then
    echo "ok   node.toml accepted by permafrost-node init (with its [operators] registry)"
else
    echo "FAIL node.toml: $out"; status=1
fi

# A cold node: [seal] manual = true, the unseal passphrase set at init.
printf 'throwaway-unseal-passphrase\n' > "$scratch/unseal"
scratch_config data-manual | with_operators | sed -e 's|^manual = false|manual = true|' > "$scratch/node-manual.toml"
if out="$("$bin_dir/permafrost-node" init --config "$scratch/node-manual.toml" \
        --unseal-passphrase-file "$scratch/unseal" 2>&1)" && grep -q '"tls_csr"' <<<"$out"; then
    echo "ok   node.toml with [seal] manual = true accepted by init --unseal-passphrase-file"
else
    echo "FAIL node.toml, manual sealing: $out"; status=1
fi

# Placeholders left in: refused, naming the field.
scratch_config data-placeholder > "$scratch/node-placeholder.toml"
if out="$("$bin_dir/permafrost-node" init --config "$scratch/node-placeholder.toml" 2>&1)"; then
    echo "FAIL node.toml: accepted with REPLACE_OPERATOR_* placeholders"; status=1
elif grep -q 'operators.keys' <<<"$out"; then
    echo "ok   node.toml refused with the operator placeholders left in: $(tail -n1 <<<"$out" | cut -c1-100)"
else
    echo "FAIL node.toml with placeholders refused, but not for them: $(tail -n1 <<<"$out")"; status=1
fi

# The coordinator holds the nodes' registry.
if out="$(python3 - "$here/node.toml" "$here/coordinator.toml" 2>&1 <<'PY'
import sys, tomllib
node, coord = (tomllib.load(open(p, "rb")).get("operators") for p in sys.argv[1:3])
if node is None or node != coord:
    sys.exit(f"node.toml [operators] {node!r} != coordinator.toml [operators] {coord!r}")
print(f"{len(node['keys'])} operators, quorum {node['default_quorum']}")
PY
)"; then
    echo "ok   coordinator.toml holds the same [operators] as node.toml: $out"
else
    echo "FAIL coordinator.toml [operators]: $out"; status=1
fi
exit "$status"
