#!/bin/bash
# Runs INSIDE the test VM (see run-lvm-tests): sets up LVM on loop devices
# backed by files in the guest's RAM-backed /tmp, runs the LVM test binaries
# built on the host (the provider tests of tests/lvm.rs, then the backups of
# tests/lvm_backup.rs, which start MariaDB from the host's binaries), checks
# that nothing is left, and prints "N passed, N failed". Exit status 0 only
# if all passed.
set -uo pipefail
usage="usage: guest-lvm.sh LVM-TEST-BINARY BACKUP-TEST-BINARY [test filter...]"
lvm_bin=${1:?$usage}
backup_bin=${2:?$usage}
shift 2
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
work=/tmp/kcbt
export LVM_SUPPRESS_FD_WARNINGS=1
# No udev in the VM: lvm must create device nodes itself and not wait for
# udev; its metadata backups go to $LVM_SYSTEM_DIR, in the guest's RAM.
export LVM_SYSTEM_DIR=$work/lvm
passed=0 failed=0

step() { echo "guest [$(cut -d' ' -f1 /proc/uptime)s]: $*"; }
die() { echo "guest: setup failed: $*"; echo "0 passed, 1 failed"; exit 1; }

modprobe -a loop dm_mod dm_snapshot dm_thin_pool ext4 xfs || die "modprobe"
mkdir -p "$LVM_SYSTEM_DIR" "$work/mnt"
# Only loop devices are scanned: every scan is slow under emulation.
cat > "$LVM_SYSTEM_DIR/lvm.conf" <<'CONF'
devices { obtain_device_list_from_udev = 0 use_devicesfile = 0 global_filter = [ "a|^/dev/loop|", "r|.*|" ] }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
# thin_check (thin-provisioning-tools) is not needed for a fresh pool.
global { event_activation = 0 thin_check_executable = "" }
CONF

# pv NAME SIZE: a loop device on a sparse file; prints the device.
pv() {
  truncate -s "$2" "$work/$1.img" && losetup --find --show "$work/$1.img"
}
# lv VG NAME SIZE-ARGS FSTYPE: a logical volume with a filesystem, mounted.
lv() {
  if [[ $3 == *-T* ]]; then
    lvcreate -q -y -n "$2" $3 >/dev/null 2>&1 || return 1
  else
    lvcreate -q -y -n "$2" $3 "$1" >/dev/null || return 1
  fi
  if [ "$4" = xfs ]; then mkfs.xfs -q -f "/dev/$1/$2"; else mkfs.ext4 -q -F "/dev/$1/$2"; fi || return 1
  mkdir -p "$work/mnt/$2" && mount "/dev/$1/$2" "$work/mnt/$2"
}

step "setting up volume groups"
pv_main=$(pv main 1G) || die "losetup"
pv_full=$(pv full 64M) || die "losetup"
pvcreate -q "$pv_main" "$pv_full" >/dev/null || die "pvcreate"
vgcreate -q kcbt "$pv_main" >/dev/null || die "vgcreate kcbt"
vgcreate -q kcbtfull "$pv_full" >/dev/null || die "vgcreate kcbtfull"
lv kcbt ext4 "-L 64M" ext4 || die "ext4 LV"
lv kcbt xfs "-L 320M" xfs || die "xfs LV"
# A thin volume in a thin pool (its snapshots take no size).
lvcreate -q -y -L 128M -T kcbt/pool >/dev/null || die "thin pool"
lv kcbt thin "-V 256M -T kcbt/pool" ext4 || die "thin LV"
# A volume group with no free extents left.
lv kcbtfull full "-l 100%FREE" ext4 || die "full LV"
vgs kcbt kcbtfull
lvs kcbt kcbtfull

export KCBT_LVM_EXT4=$work/mnt/ext4 KCBT_LVM_XFS=$work/mnt/xfs KCBT_LVM_FULL=$work/mnt/full \
  KCBT_LVM_THIN=$work/mnt/thin
# run BINARY [filter...]: its ignored (VM-only) tests, one at a time; adds
# its counts to passed/failed. A filter may leave one binary with no test.
run() {
  local bin=$1 log result status p=0 f=0
  shift
  log=$work/$(basename "$bin").log
  step "running $(basename "$bin")"
  "$bin" --ignored --test-threads=1 --nocapture --skip hold_snapshot_until_signalled "$@" 2>&1 \
    | tee "$log"
  status=${PIPESTATUS[0]}
  result=$(grep -aE '^test result:' "$log" | tail -1)
  if [[ $result =~ ([0-9]+)\ passed\;\ ([0-9]+)\ failed ]]; then
    p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
  fi
  [ "$status" -eq 0 ] || [ "$f" -gt 0 ] || f=1
  passed=$((passed + p)) failed=$((failed + f))
}
run "$lvm_bin" "$@"
run "$backup_bin" "$@"
[ "$passed" -gt 0 ] || { echo "guest: FAIL: no test ran"; failed=$((failed + 1)); }

step "checking that nothing is left"
left=$(lvs --noheadings -o lv_name 2>/dev/null | grep -c kcbackup-snap-)
mounts=$(grep -c kcbackup-snap- /proc/self/mountinfo)
dirs=$(find /run/kcbackup -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
if [ "$left" -ne 0 ] || [ "$mounts" -ne 0 ] || [ "$dirs" -ne 0 ]; then
  echo "guest: FAIL: $left snapshot LVs, $mounts snapshot mounts, $dirs mount dirs left"
  lvs; grep kcbackup-snap- /proc/self/mountinfo; ls -la /run/kcbackup
  failed=$((failed + 1))
else
  passed=$((passed + 1))
fi

step "tearing down"
umount "$work"/mnt/* 2>/dev/null
vgremove -q -ff kcbt kcbtfull >/dev/null 2>&1
losetup -d "$pv_main" "$pv_full"

[ "$failed" -eq 0 ] && echo "guest: PASS" || echo "guest: FAIL"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
