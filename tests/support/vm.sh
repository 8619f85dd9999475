#!/usr/bin/env bash
# Runs a command as root inside a virtual machine that boots Debian's own kernel
# (linux-image-amd64, fetched from the Debian archive), for tests that need kernel
# features the machine they run on lacks: IPVS, here (tests/scale_out.rs). The guest's
# root file system is this machine's, shared read-write over virtio-9p, so the guest
# runs the same binaries, sees the same checkout and writes where the host reads; it
# gets its own /proc, /sys, /dev, /run and network namespaces. KVM when the machine
# can run it, else software emulation (TCG: slower, the same result).
#
#   bash tests/support/vm.sh COMMAND [ARGS…]
#
# Exits with COMMAND's status (124 if the guest did not report one). The command's
# output comes out on stdout (the guest's console); the kernel's own lines do not.
# Environment: FTPGATE_VM_CACHE (kernel and initramfs; target/vm by default),
# FTPGATE_VM_CPUS (2), FTPGATE_VM_MEMORY (3072, MiB), FTPGATE_VM_TIMEOUT (1800, s).
# Inside the guest, FTPGATE_VM_MODULES names the unpacked kernel's root for
# `modprobe -d`, and FTPGATE_IN_VM=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS…]" >&2; exit 2; }
bash deploy/prerequisites.sh qemu-system-x86_64:qemu-system-x86 busybox:busybox-static \
    depmod:kmod cpio:cpio
# The initramfs holds busybox alone, without a C library: Debian's plain busybox
# package is linked dynamically, busybox-static (which replaces it) is not.
if ldd "$(command -v busybox)" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static
fi

cache=${FTPGATE_VM_CACHE:-$root/target/vm}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# Debian's current kernel package for this release: the one linux-image-amd64 names.
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9].*-amd64$/ { print $2; exit }'
}
package=$(kernel_package)
if [ -z "$package" ]; then
    apt-get update -qq
    package=$(kernel_package)
fi
[ -n "$package" ] || { echo "vm.sh: no linux-image-amd64 in Debian's package lists" >&2; exit 1; }
kver=${package#linux-image-}
kroot=$cache/$kver
if [ ! -f "$kroot/boot/vmlinuz-$kver" ]; then
    rm -rf "$kroot" "$cache/download"
    mkdir -p "$cache/download"
    # apt's sandbox user may not write here; the download is checked by apt either way.
    (cd "$cache/download" && apt-get download -q "$package" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    deb=$(ls "$cache/download/${package}_"*.deb)
    dpkg-deb -x "$deb" "$kroot"
    rm -rf "$cache/download"
    depmod -b "$kroot" "$kver"
fi

# The initramfs: busybox, the modules that mount the shared root, and an init that
# mounts it and hands over to tests/support/vm-guest.sh.
initrd=$cache/initrd-$kver.cpio.gz
if [ ! -s "$initrd" ] || [ tests/support/vm.sh -nt "$initrd" ]; then
    staging=$(mktemp -d)
    mkdir -p "$staging/bin" "$staging/modules"
    cp "$(command -v busybox)" "$staging/bin/busybox"
    for module in virtio_pci 9pnet_virtio 9p; do
        modprobe -d "$kroot" -S "$kver" --show-depends "$module" | awk '$1 == "insmod" { print $2 }'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$staging/modules/"
        basename "$ko" >> "$staging/modules/order"
    done
    cat > "$staging/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /dev /newroot
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for ko in $(cat /modules/order); do insmod "/modules/$ko"; done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=mmap hostroot /newroot; then
    echo "vm: cannot mount the host's root" > /dev/console
    poweroff -f
fi
umount /proc
exec switch_root /newroot /bin/bash "$ftpgate_vm_root/tests/support/vm-guest.sh" "$ftpgate_vm_job"
INIT
    chmod 755 "$staging/init"
    (cd "$staging" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.new"
    mv "$initrd.new" "$initrd"
    rm -rf "$staging"
fi

# The job: what to run, where, and where its status goes.
job=$(mktemp -d "$root/target/vm-job.XXXXXX")
trap 'rm -rf "$job"' EXIT
{
    printf 'cd %q\n' "$PWD"
    printf 'export FTPGATE_VM_MODULES=%q FTPGATE_IN_VM=1\n' "$kroot"
    for var in CI RUST_LOG RUST_BACKTRACE PATH HOME CARGO_HOME RUSTUP_HOME; do
        [ -n "${!var:-}" ] && printf 'export %s=%q\n' "$var" "${!var}"
    done
    printf '%q ' "$@"
    echo
} > "$job/command"

# KVM only where the CPU offers virtualisation to this machine: some hosts hand a
# /dev/kvm to guests whose CPU has no vmx/svm, and a kernel booted on it hangs early.
accel=${FTPGATE_VM_ACCEL:-tcg}
if [ -z "${FTPGATE_VM_ACCEL:-}" ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
    grep -qwE 'vmx|svm' /proc/cpuinfo; then
    accel=kvm
fi
cpu=max
[ "$accel" = kvm ] && cpu=host
status=0
timeout "${FTPGATE_VM_TIMEOUT:-1800}" qemu-system-x86_64 \
    -accel "$accel" -cpu "$cpu" -smp "${FTPGATE_VM_CPUS:-2}" -m "${FTPGATE_VM_MEMORY:-3072}" \
    -kernel "$kroot/boot/vmlinuz-$kver" -initrd "$initrd" \
    -append "console=ttyS0 ${FTPGATE_VM_KERNEL_ARGS:-quiet loglevel=1} panic=-1 ftpgate_vm_root=$root ftpgate_vm_job=$job" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,multidevs=remap,id=hostroot" \
    -nic none -display none -no-reboot -monitor none -serial stdio </dev/null || status=$?
if [ -s "$job/status" ]; then
    exit "$(cat "$job/status")"
fi
echo "vm.sh: the guest reported no status (qemu exited with $status)" >&2
exit 124
