#!/bin/bash
# Provision what capacityd's libvirt tests and benchmark need, without touching the host's libvirt.
#
# * Debian packages: libvirtd + the QEMU driver + QEMU (TCG guests), the clients (virsh, virt-admin),
#   and Debian's prometheus-libvirt-exporter (the benchmark's peer). Nothing is started or enabled
#   here: tests run their own libvirtd in a private mount+net namespace (tests/services/libvirtd.py),
#   so /etc/libvirt, /var/lib/libvirt and /run/libvirt of the host stay as they are.
# * A tiny Linux guest, cached under $CACHE: Debian's cloud kernel (vmlinuz) and a busybox initramfs
#   whose /init loads virtio_balloon, so balloon stats (balloon.usable/available/unused) are real.
#   The kernel and busybox .debs are *downloaded and unpacked* into $CACHE, not installed: no kernel
#   postinst, nothing written to /boot.
#
# Result (reused when present):  $CACHE/vmlinuz  $CACHE/initrd.img  $CACHE/READY
# Usage: scripts/provision/libvirt.sh [--force]
set -euo pipefail

CACHE=${CAPACITYD_LIBVIRT_CACHE:-/var/cache/capacityd-ci/libvirt}
STAMP_VERSION="libvirt guest: debian cloud kernel + busybox balloon initramfs; recipe 3"
FORCE=${1:-}
# Other provisioning scripts may run apt at the same time: wait for the dpkg lock instead of failing.
APT_GET=(apt-get -o DPkg::Lock::Timeout=900)
PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 libvirt-clients
          prometheus-libvirt-exporter iproute2 util-linux cpio xz-utils zstd)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    echo "libvirt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${APT_GET[@]}" update -qq
    # policy-rc.d: packages must not start the host's libvirtd (or anything) while installing.
    policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_added=1
    fi
    status=0
    "${APT_GET[@]}" install -y -qq --no-install-recommends "${missing[@]}" || status=$?
    (( policy_added )) && rm -f /usr/sbin/policy-rc.d
    (( status == 0 )) || { echo "libvirt: apt-get install failed ($status)" >&2; exit "$status"; }
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [[ "$FORCE" != "--force" && -f "$CACHE/READY" && "$(head -1 "$CACHE/READY")" == "$STAMP_VERSION" \
      && -s "$CACHE/vmlinuz" && -s "$CACHE/initrd.img" ]]; then
    echo "libvirt: guest kernel + initramfs in $CACHE are ready"
    exit 0
fi
rm -f "$CACHE/READY"

WORK=$(mktemp -d "$CACHE/build.XXXXXX")
chmod 755 "$WORK"; id _apt >/dev/null 2>&1 && chown _apt "$WORK"   # apt-get download runs as _apt
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# The concrete kernel image package behind the cloud metapackage (e.g. linux-image-6.1.0-41-cloud-amd64).
[[ -n "$(apt-cache policy linux-image-cloud-amd64 | grep Candidate | grep -v none || true)" ]] || "${APT_GET[@]}" update -qq
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[[ -n "$kpkg" ]] || { echo "libvirt: cannot resolve the package behind linux-image-cloud-amd64" >&2; exit 1; }
echo "libvirt: fetching $kpkg and busybox-static (unpacked into $CACHE, not installed)"
"${APT_GET[@]}" download -qq "$kpkg" busybox-static
mkdir kroot broot
dpkg-deb -x ./"$kpkg"_*.deb kroot
dpkg-deb -x ./busybox-static_*.deb broot

kver=$(ls kroot/lib/modules | head -1)
mods=kroot/lib/modules/$kver/kernel/drivers/virtio
mkdir -p init/bin init/modules init/proc init/sys init/dev
cp broot/bin/busybox init/bin/busybox
# Modules the guest needs, in load order (the cloud kernel builds virtio itself as modules). Each
# module's own `depends=` must be loaded before it: checked, so a kernel update cannot break it silently.
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon)
loaded=" "
i=0
for m in "${MODULES[@]}"; do
    f=$(find "$mods" -name "$m.ko*" | head -1)
    [[ -n "$f" ]] || { echo "libvirt: module $m not found under $mods" >&2; exit 1; }
    i=$((i + 1))
    out=$(printf 'init/modules/%02d-%s.ko' "$i" "$m")
    case "$f" in
        *.xz) xz -dc "$f" > "$out" ;;
        *.zst) zstd -qdc "$f" > "$out" ;;
        *) cp "$f" "$out" ;;
    esac
    deps=$(grep -a -o 'depends=[^[:cntrl:]]*' "$out" | head -1 | cut -d= -f2 | tr ',' ' ')
    for d in $deps; do
        [[ "$loaded" == *" $d "* ]] || { echo "libvirt: $m needs $d loaded first; update MODULES" >&2; exit 1; }
    done
    loaded+="$m "
done
cat > init/init <<'EOF'
#!/bin/busybox sh
# Minimal guest: load virtio_balloon (so libvirt gets balloon stats), keep some memory busy, idle.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
for m in /modules/*.ko; do /bin/busybox insmod "$m" && echo "capacityd-guest: loaded $m"; done
echo "capacityd-guest: ready"
while :; do /bin/busybox sleep 3600; done
EOF
chmod +x init/init
(cd init && find . | cpio -o -H newc --quiet | gzip -9) > initrd.img
cp "kroot/boot/vmlinuz-$kver" vmlinuz

mv -f vmlinuz "$CACHE/vmlinuz"
mv -f initrd.img "$CACHE/initrd.img"
printf '%s\nkernel %s (%s)\n' "$STAMP_VERSION" "$kver" "$kpkg" > "$CACHE/READY"
echo "libvirt: guest kernel $kver + initramfs ready in $CACHE"
