# %preun of the kes rpm: stop and disable kes when the package is erased
# ($1 = 0); an upgrade ($1 = 1) leaves it running.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop kes.service >/dev/null 2>&1 || true
    fi
    systemctl --no-reload disable kes.service >/dev/null 2>&1 || true
fi
exit 0
