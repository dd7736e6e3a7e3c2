# %post of the kes rpm: key directory; restart on upgrade.
# The fs keystore. An existing directory (kept from an earlier install, or
# prepared by the admin) is left as it is.
if [ ! -d /var/lib/kes ]; then
    install -d -o kes -g kes -m 0700 /var/lib/kes
fi
chown root:kes /etc/kes
chmod 0750 /etc/kes
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    # $1 is 2 or more on an upgrade: restart a running kes on the new binary.
    if [ "$1" -ge 2 ]; then
        systemctl try-restart kes.service >/dev/null 2>&1 || true
    fi
fi
exit 0
