#!/bin/bash
# coopwatt first boot: install the household agent, its config and credentials, enable it.
#
# Runs as root from the folder that holds the bundle's files (agent.toml, agent.password,
# ca.crt, client.crt, client.key, firstboot.env, coopwatt-agent.service, and from bundles that
# have the household page, household-code and coopwatt-agent-web.service): cloud-init's runcmd,
# coopwatt-firstboot.service, or by hand: `sudo bash /boot/firmware/coopwatt/firstboot.sh`.
# Safe to run again (re-provisioned credentials): an existing /etc/coopwatt/agent.toml is kept
# and the new one written beside it as agent.toml.new.
# COOPWATT_ROOT (tests only) prefixes every path it writes.
set -euo pipefail

SRC=$(dirname "$(readlink -f "$0")")
ROOT=${COOPWATT_ROOT:-}
ETC=$ROOT/etc/coopwatt
STATE=$ROOT/var/lib/coopwatt
VENV=$ROOT/opt/coopwatt
UNITS=$ROOT/etc/systemd/system

say() { echo "coopwatt-firstboot: $*"; }
# rm alone leaves a secret's blocks on a FAT boot partition; shred overwrites them first.
wipe() { shred -u "$@" 2>/dev/null || rm -f "$@"; }

# shellcheck source=/dev/null
. "$SRC/firstboot.env"
for f in agent.toml agent.password ca.crt client.crt client.key coopwatt-agent.service; do
    [ -f "$SRC/$f" ] || { say "missing $SRC/$f: is this a coopwatt bundle?"; exit 1; }
done
umask 077

# The service account: no login, in the groups that own GPIO pins and serial ports.
getent group coopwatt >/dev/null || groupadd --system coopwatt
id -u coopwatt >/dev/null 2>&1 || useradd --system --gid coopwatt --home-dir /var/lib/coopwatt \
    --no-create-home --shell /usr/sbin/nologin coopwatt
for g in gpio dialout; do
    if getent group "$g" >/dev/null; then usermod -a -G "$g" coopwatt; fi
done

# Config and credentials: secrets 0600 owned by the agent's user, the rest readable by it.
install -d -m 0750 "$ETC"
chown root:coopwatt "$ETC"
if [ -e "$ETC/agent.toml" ]; then
    install -m 0640 "$SRC/agent.toml" "$ETC/agent.toml.new"
    chown root:coopwatt "$ETC/agent.toml.new"
    say "kept $ETC/agent.toml; the provisioned one is agent.toml.new"
else
    install -m 0640 "$SRC/agent.toml" "$ETC/agent.toml"
    chown root:coopwatt "$ETC/agent.toml"
fi
for f in agent.password client.key; do
    install -m 0600 "$SRC/$f" "$ETC/$f"
    chown coopwatt:coopwatt "$ETC/$f"
done
for f in ca.crt client.crt; do
    install -m 0644 "$SRC/$f" "$ETC/$f"
done
install -d -m 0750 "$STATE"
chown coopwatt:coopwatt "$STATE"
# The household page's one-time code, unless the household has already chosen its password
# (a bundle run again for new credentials must not open a page that is set up).
if [ -f "$SRC/household-code" ] && [ ! -e "$STATE/web/household.json" ]; then
    install -m 0600 "$SRC/household-code" "$STATE/household-code"
    chown coopwatt:coopwatt "$STATE/household-code"
fi

# The agent, in its own virtual environment (no numpy: it fits a Pi Zero 2 W).
if [ ! -x "$VENV/bin/pip" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
fi
if [ -n "${COOPWATT_WHEEL:-}" ] && [ -f "$SRC/$COOPWATT_WHEEL" ]; then
    package="$SRC/${COOPWATT_WHEEL}[agent,web]"
else
    package=${COOPWATT_PACKAGE:-coopwatt[agent,web]}
fi
say "installing $package"
"$VENV/bin/pip" install --quiet --upgrade "$package"

# The service: enabled now, started when the config lists devices (else after commissioning).
install -d -m 0755 "$UNITS"
install -m 0644 "$SRC/coopwatt-agent.service" "$UNITS/coopwatt-agent.service"
systemctl daemon-reload
systemctl enable coopwatt-agent.service
# The household's page needs no devices: it starts now and says what the agent is doing.
if [ -f "$SRC/coopwatt-agent-web.service" ]; then
    install -m 0644 "$SRC/coopwatt-agent-web.service" "$UNITS/coopwatt-agent-web.service"
    systemctl daemon-reload
    systemctl enable coopwatt-agent-web.service
    systemctl restart coopwatt-agent-web.service
fi
if grep -q '^\[\[devices\]\]' "$ETC/agent.toml"; then
    systemctl restart coopwatt-agent.service
    say "agent started; check it with: coopwatt-agent check"
else
    say "agent enabled; add [[devices]] to /etc/coopwatt/agent.toml (coopwatt-agent scan), run"
    say "coopwatt-agent check, then: sudo systemctl restart coopwatt-agent"
fi

# Leave no secrets behind: the staging folder goes, and a bundle on the boot partition (FAT,
# readable by anyone holding the card) loses its password and key.
wipe "$SRC/agent.password" "$SRC/client.key" "$SRC/household-code"
if [ "$SRC" = "$ROOT/var/lib/coopwatt-firstboot" ]; then
    rm -rf "$SRC"
    systemctl disable coopwatt-firstboot.service >/dev/null 2>&1 || true
fi
ln -sf "$VENV/bin/coopwatt-agent" "$ROOT/usr/local/bin/coopwatt-agent" 2>/dev/null || true
say "done for home ${COOPWATT_HOME:-?}"
