#!/usr/bin/env bash
# mmdebstrap's customize hook for build.sh: turns the fresh Debian tree in $1 into a guest that
# boots quickly under software emulation and does its first boot through cloud-init's NoCloud
# data source (the seed ISO the qemu provider attaches), exactly like a cloud image.
set -euo pipefail
root=${1:?usage: customize.sh ROOT}

# The root file system is the whole first virtio disk (no partition table); see build.sh.
echo "/dev/vda / ext4 defaults,noatime,errors=remount-ro 0 1" >"$root/etc/fstab"

# A small initrd: only what mounting /dev/vda needs (MODULES=most makes it 15 MB, slow to unpack).
cat >"$root/etc/initramfs-tools/conf.d/onebox.conf" <<'CONF'
MODULES=list
COMPRESS=gzip
CONF
printf '%s\n' virtio_pci virtio_blk virtio_net virtio_scsi ext4 >>"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all

# cloud-init: the seed ISO only (no network probes for cloud metadata), ed25519 host keys only
# (generating RSA keys under emulation takes seconds), network configuration rendered for
# systemd-networkd, and no modules for what a onebox guest never has (snaps, Landscape, Puppet,
# Chef, ...): each is a Python import under emulation. `locale` is left out of the config stage
# (the schema-valid way of `locale: false`: no locale is generated).
cat >"$root/etc/cloud/cloud.cfg.d/90-onebox.cfg" <<'CONF'
#cloud-config
datasource_list: [NoCloud, None]
ssh_genkeytypes: [ed25519]
ssh_deletekeys: true
manage_etc_hosts: true
system_info:
  network:
    renderers: [networkd]
cloud_config_modules: [set-passwords, apt-configure, ntp, timezone, runcmd]
cloud_final_modules: [package-update-upgrade-install, write-files-deferred, scripts-vendor, scripts-per-once,
                      scripts-per-boot, scripts-per-instance, scripts-user, ssh-authkey-fingerprints,
                      keys-to-console, phone-home, final-message, power-state-change]
CONF

# Passwords are off for SSH from the start: cloud-init then has nothing to change for
# `ssh_pwauth: false`, and does not restart sshd in the middle of the first configuration run.
sed -i 's/^#\?PasswordAuthentication .*/PasswordAuthentication no/' "$root/etc/ssh/sshd_config"
grep -q '^PasswordAuthentication no' "$root/etc/ssh/sshd_config"
# user-mode networking's DNS server; networkd does not write resolv.conf without resolved
echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"
chroot "$root" systemctl enable systemd-networkd.service
# nothing waits for "network online": the guest's two links are configured statically or by slirp's DHCP
chroot "$root" systemctl mask systemd-networkd-wait-online.service
# periodic jobs a short-lived VM does not need, which would compete for the emulated CPU
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
    chroot "$root" systemctl mask "$unit" >/dev/null 2>&1 || true
done

# Modules udev would load for the emulated CPU's features (nested KVM, AMD power states) cost seconds
# of an emulated boot and are of no use in a guest.
printf 'blacklist %s\n' kvm kvm_amd kvm_intel powernow_k8 >"$root/etc/modprobe.d/onebox-guest.conf"

# Every VM gets its own identity at first boot: no host keys, no machine id in the image.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo onebox >"$root/etc/hostname"
rm -rf "$root"/var/cache/apt/archives/*.deb
