#!/usr/bin/env bash
# Checks the systemd units and example configs beside this file:
#   - `systemd-analyze verify` on each unit, in a scratch root that holds the
#     daemon binaries at the units' ExecStart paths (verify refuses a unit
#     whose binary does not exist); any message at all is a failure, since
#     verify exits 0 on unknown or unparsable settings
#   - `systemd-analyze security --offline`: exposure level at most 2.0
#   - node.toml parsed and validated by the real permafrost-node (`init` into
#     a scratch data dir with a throwaway passphrase)
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
# Any valid Ed25519 public key will do for parsing (RFC 8032 test vector 1).
key="d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
sed -e "s|^data_dir = .*|data_dir = \"$scratch/data\"|" \
    -e "s|^passphrase_file = .*|passphrase_file = \"$scratch/passphrase\"|" \
    -e "s|REPLACE_CUSTODY_PUBLIC_KEY|$key|" \
    "$here/node.toml" > "$scratch/node.toml"
if out="$("$bin_dir/permafrost-node" init --config "$scratch/node.toml" 2>&1)" \
        && grep -q '"tls_csr"' <<<"$out"; then
    echo "ok   node.toml accepted by permafrost-node init"
else
    echo "FAIL node.toml: $out"; status=1
fi
exit "$status"
