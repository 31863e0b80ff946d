#!/usr/bin/env bash
# Validates the Kubernetes manifests without a cluster:
#   1. schema: kubernetes-validate --strict (PyPI; bundled OpenAPI schemas,
#      unknown fields refused) for the oldest and newest Kubernetes we target
#   2. validate.py: strict YAML, pod security, wiring, configs, PDB, policies
#      (with --node-bin, the node configs through the real permafrost-node)
#   3. kubectl kustomize, when kubectl is installed
#
# Usage: deploy/k8s/check.sh [--node-bin PATH]
# PERMAFROST_K8S_VENV: where to keep the validator's virtualenv
# (default ~/.cache/permafrost/k8s-venv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
node_bin=()
[ "${1:-}" = "--node-bin" ] && node_bin=(--node-bin "$2")

venv="${PERMAFROST_K8S_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/permafrost/k8s-venv}"
validator_version="1.37.0"
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$validator_version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$validator_version" "PyYAML>=6"
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
files=()
for f in "$here"/*.yaml; do
    case "$(basename "$f")" in
        kustomization.yaml) continue ;;
        node-init-job.yaml)
            sed 's/NODE_ID/eu-west-0/g; s/REGION/eu-west/g' "$f" > "$scratch/node-init-job.yaml"
            files+=("$scratch/node-init-job.yaml") ;;
        *) files+=("$f") ;;
    esac
done
for version in 1.30.0 1.37.0; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${files[@]}"
    echo "k8s: ${#files[@]} files valid against the Kubernetes $version schemas (strict)"
done

"$venv/bin/python" "$here/validate.py" "${node_bin[@]}" "$here"

if command -v kubectl >/dev/null; then
    n="$(kubectl kustomize "$here" | grep -c '^kind:')"
    echo "k8s: kubectl kustomize builds $n objects"
else
    echo "k8s: kubectl not installed; kustomize build skipped"
fi
