# %postun of the kes rpm. On erase ($1 = 0) the same policy as a Debian purge:
# keys are never deleted by the package manager. rpm deletes the files it
# installed (a modified /etc/kes/config.yml is kept as config.yml.rpmsave).
# Whatever else is left in /var/lib/kes (the keys of the fs keystore) or
# /etc/kes (the TLS key and certificate) is kept, and so is the kes user and
# group that owns it: deleting them would leave files owned by a number the
# next new account could receive. With both directories empty, erase removes
# them and the user and group.
if [ "$1" -eq 0 ]; then
    rmdir /etc/kes 2>/dev/null || true
    rmdir /var/lib/kes 2>/dev/null || true
    if [ -e /var/lib/kes ] || [ -e /etc/kes ]; then
        echo "kes: keeping /var/lib/kes, /etc/kes and the kes user: they still hold keys or certificates." >&2
        echo "kes: to remove them: rm -r /var/lib/kes /etc/kes && userdel kes" >&2
    else
        if getent passwd kes >/dev/null; then
            userdel kes >/dev/null 2>&1 || true
        fi
        if getent group kes >/dev/null; then
            groupdel kes >/dev/null 2>&1 || true
        fi
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
