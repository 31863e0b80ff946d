#!/usr/bin/env bash
# Builds the Permafrost container images locally; nothing is pulled from a
# registry.
#
#   permafrost-base:<suite>        a minimal Debian root filesystem made by
#                                  debootstrap from this machine's apt mirror
#                                  and `docker import`ed (built once, reused)
#   permafrost-node:<tag>          signer node
#   permafrost-coordinator:<tag>   coordinator
#   permafrostctl:<tag>            operator tools: permafrostctl, plus
#                                  permafrost-node for `init` (compose init)
#
# Usage:
#   deploy/build-images.sh [--bin-dir DIR] [--tag TAG] [--rebuild-base]
#
#   --bin-dir DIR    directory holding permafrost-node, permafrost-coordinator
#                    and permafrostctl (default: target/release if it has
#                    them, else target/debug)
#   --tag TAG        image tag (default: local)
#   --rebuild-base   debootstrap the base image again even if it exists
#   --base-only      build (or keep) the base image and stop
#
# Environment: PERMAFROST_DEBIAN_MIRROR and PERMAFROST_DEBIAN_SUITE override
# the mirror and suite read from /etc/apt (sources.list.d/*.sources or
# sources.list). Needs root (debootstrap) for the base image only.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

bin_dir=""
tag="local"
rebuild_base=0
base_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --rebuild-base) rebuild_base=1; shift ;;
        --base-only) base_only=1; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "build-images.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

# --- the machine's Debian mirror and suite, read at run time -------------

# Prints "URI SUITE" of the first enabled Debian source with a plain suite
# name (not -security/-updates) and the main component.
apt_source() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && comps ~ /(^| )main( |$)/ && enabled != "no") {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (s[i] ~ /^[a-z]+$/) { split(uris, u, " "); print u[1], s[i]; exit }
                }
                types = uris = suites = comps = ""; enabled = "yes"
            }
            BEGIN { enabled = "yes" }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
              if (key == "types") types = $0; else if (key == "uris") uris = $0
              else if (key == "suites") suites = $0; else if (key == "components") comps = $0
              else if (key == "enabled") enabled = tolower($0) }
            END { flush() }
        ' "$f"
    done | head -n1 | grep . && return 0
    local list
    for list in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$list" ] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/\[[^]]*\]//' "$list" | awk '$1 == "deb" && $3 ~ /^[a-z]+$/ { print $2, $3; exit }'
    done | head -n1 | grep . && return 0
    return 1
}

suite="${PERMAFROST_DEBIAN_SUITE:-}"
mirror="${PERMAFROST_DEBIAN_MIRROR:-}"
if [ -z "$suite" ] || [ -z "$mirror" ]; then
    if ! src="$(apt_source)"; then
        echo "build-images.sh: no Debian source found in /etc/apt; set PERMAFROST_DEBIAN_MIRROR and PERMAFROST_DEBIAN_SUITE" >&2
        exit 1
    fi
    mirror="${mirror:-${src% *}}"
    suite="${suite:-${src#* }}"
fi
base="permafrost-base:$suite"

# --- base image ----------------------------------------------------------

build_base() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "build-images.sh: debootstrap needs root to build $base" >&2
        exit 1
    fi
    if ! command -v debootstrap >/dev/null; then
        echo "== installing debootstrap"
        apt-get install -y debootstrap >/dev/null
    fi
    local rootfs
    rootfs="$(mktemp -d /tmp/permafrost-rootfs.XXXXXX)"
    echo "== debootstrap $suite (minbase + curl for the gRPC health probe, jq for the init script)"
    local t0=$SECONDS
    debootstrap --variant=minbase --include=curl,jq "$suite" "$rootfs" "$mirror" \
        > "$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
    # Nothing in the image needs package indexes, docs or man pages.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
           "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
           "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
    # The build machine's resolver and hostname are not part of the image.
    : > "$rootfs/etc/resolv.conf"
    : > "$rootfs/etc/hostname"
    tar --numeric-owner -C "$rootfs" -c . \
        | docker import \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
            -c 'CMD ["/bin/bash"]' \
            -m "debootstrap --variant=minbase $suite" - "$base" >/dev/null
    rm -rf "$rootfs"
    echo "   $base built in $((SECONDS - t0)) s"
}

if [ "$rebuild_base" -eq 1 ] || ! docker image inspect "$base" >/dev/null 2>&1; then
    build_base
else
    echo "== $base exists (--rebuild-base to make it again)"
fi

[ "$base_only" -eq 1 ] && exit 0

# --- daemon images -------------------------------------------------------

bins=(permafrost-node permafrost-coordinator permafrostctl)
has_bins() { local d="$1" b; for b in "${bins[@]}"; do [ -x "$d/$b" ] || return 1; done; }
if [ -z "$bin_dir" ]; then
    for d in "$repo/target/release" "$repo/target/debug"; do
        if has_bins "$d"; then bin_dir="$d"; break; fi
    done
fi
if [ -z "$bin_dir" ] || ! has_bins "$bin_dir"; then
    echo "build-images.sh: need ${bins[*]} in ${bin_dir:-target/release or target/debug};" \
         "build them first (cargo build --release --bins, or cargo build --bins)" >&2
    exit 1
fi
bin_dir="$(cd "$bin_dir" && pwd)"


ctx="$(mktemp -d /tmp/permafrost-image.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin"
for b in "${bins[@]}"; do
    cp "$bin_dir/$b" "$ctx/bin/$b"
    # Smaller images; the debug build keeps its line tables otherwise.
    strip --strip-debug "$ctx/bin/$b" 2>/dev/null || true
done
# The image must not need anything beyond the base's libc.
for b in "${bins[@]}"; do
    missing="$(ldd "$ctx/bin/$b" 2>&1 | grep 'not found' || true)"
    if [ -n "$missing" ]; then
        echo "build-images.sh: $b needs libraries this machine lacks: $missing" >&2
        exit 1
    fi
done
cp "$here/Dockerfile" "$ctx/Dockerfile"
cp "$here/docker/healthcheck.sh" "$ctx/healthcheck.sh"

for target in node coordinator ctl; do
    case "$target" in
        node) image="permafrost-node:$tag" ;;
        coordinator) image="permafrost-coordinator:$tag" ;;
        ctl) image="permafrostctl:$tag" ;;
    esac
    echo "== $image (from $base, binaries of $bin_dir)"
    if ! docker build -q --build-arg "BASE=$base" --target "$target" -t "$image" "$ctx" \
            >"$ctx/build.log" 2>&1; then
        grep -v -e 'legacy builder is deprecated' -e 'buildx' -e 'docs.docker.com/go/buildx' \
            "$ctx/build.log" >&2
        exit 1
    fi
done
docker image ls --format '   {{.Repository}}:{{.Tag}}  {{.Size}}' \
    | grep -E "permafrost-(base|node|coordinator)|permafrostctl" || true
