#!/bin/sh
# permafrost-healthcheck: a real gRPC health call, grpc.health.v1.Health/Check
# for the whole server (service ""), over mutual TLS, with curl's HTTP/2.
# Exit 0 only on SERVING. A daemon whose store commit is stuck, whose last
# commit failed or whose audit log cannot be written answers NOT_SERVING.
#
# Every Permafrost server requires a client certificate from the cluster CA,
# so the probe presents one: a certificate of role `node` with an id that is
# no node (e.g. probe-n1). No Permafrost service admits that role from a
# client (SignerNode wants the coordinator, NodeAdmin and Ceremony an
# operator, Custody the custody service): it reaches health and reflection only.
#
# Environment (defaults in brackets):
#   PERMAFROST_HEALTH_ADDR         host:port to dial [127.0.0.1:7443]
#   PERMAFROST_HEALTH_SERVER_NAME  TLS name in the daemon's certificate, e.g.
#                                  n1.node.permafrost or coord-1.coordinator.permafrost
#   PERMAFROST_HEALTH_DIR          directory with ca.pem, probe.pem, probe.key
#                                  [/etc/permafrost/probe]
#   PERMAFROST_HEALTH_TIMEOUT      seconds [3]
set -eu
addr="${PERMAFROST_HEALTH_ADDR:-127.0.0.1:7443}"
name="${PERMAFROST_HEALTH_SERVER_NAME:?set PERMAFROST_HEALTH_SERVER_NAME (e.g. n1.node.permafrost)}"
dir="${PERMAFROST_HEALTH_DIR:-/etc/permafrost/probe}"
timeout="${PERMAFROST_HEALTH_TIMEOUT:-3}"
host="${addr%:*}"
port="${addr##*:}"

# Request: a gRPC frame (uncompressed, length 0) holding an empty
# HealthCheckRequest. Answer when SERVING: frame of length 2, field 1 = 1.
response="$(printf '\000\000\000\000\000' \
    | curl --silent --show-error --fail --http2 --max-time "$timeout" \
        --cacert "$dir/ca.pem" --cert "$dir/probe.pem" --key "$dir/probe.key" \
        --resolve "$name:$port:$host" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        --data-binary @- --output - \
        "https://$name:$port/grpc.health.v1.Health/Check" \
    | od -An -v -tx1 | tr -d ' \n')"
case "$response" in
    00000000020801) exit 0 ;;
    00000000020802) echo "permafrost-healthcheck: $name NOT_SERVING" >&2; exit 1 ;;
    "") echo "permafrost-healthcheck: $name: no health answer" >&2; exit 1 ;;
    *) echo "permafrost-healthcheck: $name: unexpected answer $response" >&2; exit 1 ;;
esac
