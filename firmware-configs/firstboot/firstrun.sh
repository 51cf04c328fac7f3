#!/bin/bash
# coopwatt early first boot, for Raspberry Pi OS images customised through cmdline.txt:
#   systemd.run=/boot/firmware/coopwatt/firstrun.sh systemd.run_success_action=reboot
#   systemd.unit=kernel-command-line.target
# The network is not up yet, so this only moves the bundle off the boot partition (FAT, readable
# by anyone holding the card) into /var/lib/coopwatt-firstboot (root only), installs
# coopwatt-firstboot.service to run firstboot.sh on the next boot, runs Raspberry Pi Imager's own
# firstrun.sh if there is one, and takes itself out of cmdline.txt. The Pi then reboots.
# COOPWATT_ROOT (tests only) prefixes every path it writes.
set -eu

SRC=$(dirname "$(readlink -f "$0")")
BOOT=$(dirname "$SRC")
ROOT=${COOPWATT_ROOT:-}
STAGE=$ROOT/var/lib/coopwatt-firstboot
UNITS=$ROOT/etc/systemd/system

wipe() { shred -u "$@" 2>/dev/null || rm -f "$@"; }
umask 077
install -d -m 0700 "$STAGE"
for f in "$SRC"/*; do
    case "$(basename "$f")" in
        firstrun.sh) ;;
        *) install -m 0600 "$f" "$STAGE/" ;;
    esac
done
chmod 0700 "$STAGE/firstboot.sh"
install -d -m 0755 "$UNITS"
install -m 0644 "$SRC/coopwatt-firstboot.service" "$UNITS/coopwatt-firstboot.service"
systemctl enable coopwatt-firstboot.service
wipe "$SRC/agent.password" "$SRC/client.key" "$SRC/household-code"

if [ -f "$BOOT/firstrun.sh" ]; then
    bash "$BOOT/firstrun.sh" || echo "coopwatt-firstrun: Imager's firstrun.sh failed" >&2
fi
if [ -f "$BOOT/cmdline.txt" ]; then
    sed -i -e 's| systemd\.run[^ ]*||g' -e 's| systemd\.unit=kernel-command-line\.target||g' \
        "$BOOT/cmdline.txt"
fi
exit 0
