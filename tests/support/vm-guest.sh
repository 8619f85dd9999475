#!/bin/bash
# The guest's side of tests/support/vm.sh, run as its init on the host's root file
# system: mounts what a Linux system needs of its own, runs the job's command with
# its output on the console, leaves the command's status in the job directory and
# powers off.
job=$1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# /run (and /var/run) are the guest's: pid files and sockets of its daemons must not
# meet the host's. /tmp stays shared: the job's files are the host's files.
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /sys/fs/cgroup 2>/dev/null || true
mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
hostname ftpgate-vm
ip link set lo up
exec </dev/null >/dev/console 2>&1
status=0
bash "$job/command" || status=$?
echo "$status" > "$job/status.new"
mv "$job/status.new" "$job/status"
sync
exec /bin/busybox poweroff -f
