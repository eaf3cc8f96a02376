#!/bin/bash
# Provision a real kube-apiserver (1.20) and etcd for capacityd's Kubernetes end-to-end tests.
#
# No registry ships kube-apiserver binaries, so this builds it from Debian's *source* package
# `kubernetes` (1.20.5+really1.20.2, full upstream tree with vendored deps) with Debian's golang-1.19,
# and unpacks Debian's etcd-server next to it. Nothing is installed system-wide: apt runs against a
# private state directory whose deb/deb-src entries are derived from this machine's own apt sources.
#
# Result (reused when present; cold build ~11 min on 2 cores):
#   $CACHE/bin/kube-apiserver   $CACHE/bin/etcd   $CACHE/READY (stamp with versions)
# Usage: scripts/provision/kubernetes.sh [--force]
set -euo pipefail

CACHE=${CAPACITYD_K8S_CACHE:-/var/cache/capacityd-ci/kubernetes}
STAMP_VERSION="kube-apiserver v1.20.2 (debian kubernetes src) + etcd-server; recipe 1"
FORCE=${1:-}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # one provisioning at a time; a second caller waits, then finds the stamp

if [[ "$FORCE" != "--force" && -f "$CACHE/READY" && "$(head -1 "$CACHE/READY")" == "$STAMP_VERSION" \
      && -x "$CACHE/bin/kube-apiserver" && -x "$CACHE/bin/etcd" ]]; then
    echo "kubernetes: cached build in $CACHE is ready"
    exit 0
fi
rm -f "$CACHE/READY"

WORK="$CACHE/build"
APT="$WORK/apt"
mkdir -p "$WORK" "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/sources.list.d" "$WORK/debs" "$WORK/root" "$CACHE/bin"

# --- private apt configuration derived from the machine's own sources --------------------------
# Every `deb` entry is kept and gets a `deb-src` twin with the same archive, suites and keyring.
: > "$APT/sources.list"
found=0
for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    # deb822: "Types: deb" -> "Types: deb deb-src"
    sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb deb-src/' "$f" > "$APT/sources.list.d/$(basename "$f")"
    found=1
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    grep -E '^[[:space:]]*deb[[:space:]]' "$f" | while read -r line; do
        echo "$line"; echo "${line/deb/deb-src}"
    done >> "$APT/sources.list"
    grep -qE '^[[:space:]]*deb[[:space:]]' "$f" && found=1
done
if [[ $found == 0 ]]; then
    echo "kubernetes: no apt sources found in /etc/apt; cannot derive deb-src entries" >&2
    exit 1
fi
APTOPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=$APT/sources.list.d"
         -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o "Debug::NoLocking=1"
         -o "APT::Sandbox::User=root")
echo "== apt update (private lists)"
apt-get "${APTOPTS[@]}" -qq update

# --- toolchain and etcd: unpacked into a private root --------------------------------------------
cd "$WORK/debs"
if [[ ! -x "$WORK/root/usr/lib/go-1.19/bin/go" || ! -x "$WORK/root/usr/bin/etcd" ]]; then
    echo "== download golang-1.19 and etcd-server"
    rm -f ./*.deb
    apt-get "${APTOPTS[@]}" -qq download golang-1.19-go golang-1.19-src etcd-server
    for d in ./*.deb; do dpkg -x "$d" "$WORK/root"; done
fi
"$WORK/root/usr/bin/etcd" --version | head -1
install -m 0755 "$WORK/root/usr/bin/etcd" "$CACHE/bin/etcd"

# --- kubernetes source ---------------------------------------------------------------------------
SRC="$WORK/gopath/src/k8s.io/kubernetes"
if [[ ! -f "$SRC/cmd/kube-apiserver/apiserver.go" ]]; then
    echo "== fetch source package kubernetes"
    rm -rf "$WORK/src" && mkdir -p "$WORK/src" && cd "$WORK/src"
    apt-get "${APTOPTS[@]}" -qq source --download-only kubernetes
    dsc=$(ls kubernetes_*.dsc | head -1)
    if command -v dpkg-source >/dev/null; then
        dpkg-source --no-check -x "$dsc" tree
    else
        # Fallback without dpkg-dev: unpack orig + debian tarballs, apply the quilt series.
        mkdir tree && tar -xf kubernetes_*.orig.tar.* -C tree --strip-components=1
        tar -xf kubernetes_*.debian.tar.* -C tree
        if [[ -f tree/debian/patches/series ]]; then
            grep -vE '^\s*(#|$)' tree/debian/patches/series | while read -r p _; do
                patch -d tree -p1 -s < "tree/debian/patches/$p"
            done
        fi
    fi
    mkdir -p "$(dirname "$SRC")"
    rm -rf "$SRC"
    ln -s "$WORK/src/tree" "$SRC"
fi

# --- build (GOPATH mode, vendored deps, no network) ---------------------------------------------
export PATH="$WORK/root/usr/lib/go-1.19/bin:$PATH" GOROOT="$WORK/root/usr/lib/go-1.19"
export GOCACHE="$WORK/gocache" GOPATH="$WORK/gopath" GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 HOME="$WORK"
cd "$SRC/"
go version
if [[ ! -s pkg/generated/openapi/zz_generated.openapi.go ]]; then
    echo "== build and run openapi-gen (the generated file is not in the source package)"
    go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
    # vendor/k8s.io/* are symlinks into staging/: -R follows them. grep exits non-zero for unreadable
    # files; the list is what matters, so no pipefail here.
    DIRS=$( set +o pipefail;
            { grep -rl --include='*.go' '^// *+k8s:openapi-gen=' pkg cmd plugin 2>/dev/null;
              grep -rlR --include='*.go' '^// *+k8s:openapi-gen=' vendor 2>/dev/null; true; } \
        | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' -e '_test.go$' \
        | xargs -n1 dirname | LC_ALL=C sort -u | sed 's#^#k8s.io/kubernetes/#' | paste -sd, -)
    [[ -n "$DIRS" ]] || { echo "kubernetes: found no openapi-gen input packages" >&2; exit 1; }
    echo "openapi-gen: $(echo "$DIRS" | tr ',' '\n' | wc -l) input packages"
    "$WORK/openapi-gen" --logtostderr -i "$DIRS" -p k8s.io/kubernetes/pkg/generated/openapi \
        -O zz_generated.openapi -h hack/boilerplate/boilerplate.generatego.txt -r "$WORK/openapi_violations.report"
fi
echo "== build kube-apiserver"
LD="-s -w -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion=v1.20.2"
LD="$LD -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMajor=1"
LD="$LD -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMinor=20"
go build -ldflags "$LD" -o "$CACHE/bin/kube-apiserver.new" ./cmd/kube-apiserver
mv "$CACHE/bin/kube-apiserver.new" "$CACHE/bin/kube-apiserver"
"$CACHE/bin/kube-apiserver" --version

# Keep the unpacked toolchain and source (cheap rebuild); drop the Go build cache (~GBs).
rm -rf "$WORK/gocache"
{ echo "$STAMP_VERSION"; "$CACHE/bin/kube-apiserver" --version; "$CACHE/bin/etcd" --version | head -1; date -u +%FT%TZ; } > "$CACHE/READY"
echo "kubernetes: ready in $CACHE"
