# %pre of the kes rpm: the kes system user, before the payload (which names it).
if ! getent group kes >/dev/null; then
    groupadd --system kes
fi
if ! getent passwd kes >/dev/null; then
    useradd --system --gid kes --home-dir /var/lib/kes --no-create-home \
        --shell /sbin/nologin --comment "KES key server" kes
fi
exit 0
