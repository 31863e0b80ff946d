#!/usr/bin/env bash
# Makes sure SoftHSM2 (the PKCS#11 module the permafrost-hsm tests run against) is installed.
# Idempotent: does nothing when the module is already present. Tests create their own
# SOFTHSM2_CONF and token directory, so no system-wide token setup is done here.
set -euo pipefail

module="${PERMAFROST_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"

if [[ -e "$module" ]]; then
    echo "softhsm-setup: PKCS#11 module present at $module"
    exit 0
fi

if [[ "$module" != /usr/lib/softhsm/libsofthsm2.so ]]; then
    echo "softhsm-setup: PERMAFROST_PKCS11_MODULE=$module does not exist" >&2
    exit 1
fi

sudo=""
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "softhsm-setup: need root or sudo to install softhsm2" >&2; exit 1; }
    sudo="sudo"
fi

echo "softhsm-setup: installing softhsm2"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq softhsm2 >/dev/null

if [[ ! -e "$module" ]]; then
    echo "softhsm-setup: softhsm2 installed but $module is still missing" >&2
    exit 1
fi
echo "softhsm-setup: installed, module at $module"
