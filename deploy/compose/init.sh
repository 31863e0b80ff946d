#!/usr/bin/env bash
# Initializes the compose cluster once: runs the one-shot `init` service
# (init/cluster-init.sh, no network) that creates the CA offline, initializes
# every node's data volume, signs their CSRs, writes the manifest, the configs,
# the secrets and the client credentials into ./cluster (PERMAFROST_CLUSTER_DIR),
# and the three ceremony operators' keys into ./operators
# (PERMAFROST_OPERATORS_DIR), which no daemon mounts: in a real cluster each
# operator keeps their own key on their own device.
#
#   ./init.sh            initialize (does nothing if already initialized)
#   ./init.sh --reset    stop the cluster, delete its volumes (keys, CA, stores!),
#                        ./cluster, ./operators and the ceremony specs here
#                        (*.spec.json), so the next ./init.sh starts from nothing
#
# Also writes .env (cluster and operators dirs, port, your uid/gid) so plain
# docker-compose commands in this directory find the same cluster.
set -euo pipefail
cd "$(dirname "$0")"

export PERMAFROST_CLUSTER_DIR="${PERMAFROST_CLUSTER_DIR:-./cluster}"
export PERMAFROST_OPERATORS_DIR="${PERMAFROST_OPERATORS_DIR:-./operators}"
export PERMAFROST_COORDINATOR_PORT="${PERMAFROST_COORDINATOR_PORT:-17443}"
export PERMAFROST_TAG="${PERMAFROST_TAG:-local}"
export PERMAFROST_UID="${PERMAFROST_UID:-$(id -u)}"
export PERMAFROST_GID="${PERMAFROST_GID:-$(id -g)}"

compose() { docker-compose --profile init --profile tools "$@"; }

if [ "${1:-}" = "--reset" ]; then
    compose down --volumes --remove-orphans
    if [ -d "$PERMAFROST_CLUSTER_DIR" ]; then
        # Files there belong to the daemons' uid; remove them as the image's root.
        docker run --rm --network none --user 0:0 --entrypoint /bin/rm \
            -v "$(cd "$PERMAFROST_CLUSTER_DIR" && pwd):/cluster" \
            "permafrostctl:$PERMAFROST_TAG" -rf /cluster/client /cluster/secrets \
            /cluster/n1 /cluster/n2 /cluster/n3 /cluster/n4 /cluster/n5 /cluster/coordinator \
            /cluster/manifest.json /cluster/policy.toml /cluster/fingerprints.txt
        rmdir "$PERMAFROST_CLUSTER_DIR" 2>/dev/null || true
    fi
    if [ -d "$PERMAFROST_OPERATORS_DIR" ]; then
        rm -f "$PERMAFROST_OPERATORS_DIR"/operator-*.key "$PERMAFROST_OPERATORS_DIR"/operator-*.pub
        rmdir "$PERMAFROST_OPERATORS_DIR" 2>/dev/null || true
    fi
    rm -f .env ./*.spec.json
    echo "reset: volumes, $PERMAFROST_CLUSTER_DIR, $PERMAFROST_OPERATORS_DIR, specs and .env removed"
    exit 0
fi

for image in permafrost-node permafrost-coordinator permafrostctl; do
    docker image inspect "$image:$PERMAFROST_TAG" >/dev/null 2>&1 \
        || { echo "init.sh: image $image:$PERMAFROST_TAG missing: run deploy/build-images.sh first" >&2; exit 1; }
done

mkdir -p "$PERMAFROST_CLUSTER_DIR"
mkdir -p -m 0700 "$PERMAFROST_OPERATORS_DIR"
cat > .env <<EOF
PERMAFROST_CLUSTER_DIR=$PERMAFROST_CLUSTER_DIR
PERMAFROST_OPERATORS_DIR=$PERMAFROST_OPERATORS_DIR
PERMAFROST_COORDINATOR_PORT=$PERMAFROST_COORDINATOR_PORT
PERMAFROST_TAG=$PERMAFROST_TAG
PERMAFROST_UID=$PERMAFROST_UID
PERMAFROST_GID=$PERMAFROST_GID
EOF
compose run --rm init
