#!/bin/sh
# The one list of what authgate's container image holds: writes the runtime image's whole
# filesystem into DEST. deploy/Dockerfile runs it in its builder stage (the runtime stage is
# `FROM scratch` plus this folder), and deploy/test-image.sh runs it on the host's build before
# running that filesystem isolated; so the image and what the test runs cannot drift apart.
#
#   deploy/rootfs.sh BINARY CONFIG DEST
#
# What goes in, and nothing else:
#   /usr/local/bin/authgate                 the binary
#   /etc/authgate/authgate.yaml             CONFIG (conf/container.yaml)
#   the shared libraries the binary links   exactly those `ldd` lists, and the dynamic loader
#   /etc/ssl/certs/ca-certificates.crt      CA certificates (an https:// resolver, rediss://)
#   /etc/passwd, /etc/group                 root and the non-root user authgate runs as
#   /etc/nsswitch.conf                      host names from /etc/hosts, then DNS
#   /tmp                                    mode 1777 (Kubernetes mounts an emptyDir over it)
#   /var/lib/dpkg/status.d/, /usr/share/doc/*/copyright
#                                           the Debian packages those files come from, as
#                                           distroless images record them (image scanners
#                                           read status.d), and their licences
set -eu

if [ $# -ne 3 ]; then
    echo "usage: $0 BINARY CONFIG DEST" >&2
    exit 2
fi
bin=$1
conf=$2
dest=$3
# The non-root user: distroless's `nonroot` numbers, so runAsUser/runAsGroup match either way.
uid=65532
gid=65532
ca=/etc/ssl/certs/ca-certificates.crt

fail() {
    echo "rootfs.sh: $*" >&2
    exit 1
}

[ -x "$bin" ] || fail "$bin is not an executable"
[ -r "$conf" ] || fail "cannot read $conf"
[ -r "$ca" ] || fail "$ca is missing (install the ca-certificates package)"
command -v ldd >/dev/null 2>&1 || fail "ldd is missing (libc-bin)"

mkdir -p "$dest"
install -D -m 0755 "$bin" "$dest/usr/local/bin/authgate"
install -D -m 0644 "$conf" "$dest/etc/authgate/authgate.yaml"
install -D -m 0644 "$ca" "$dest$ca"

# Shared libraries: every path ldd resolves (`name => /path (addr)`, and the loader as
# `/path (addr)`); the vDSO has no file. A library ldd cannot find fails the build.
libs=$(ldd "$bin" 2>&1) || fail "ldd $bin failed: $libs"
if printf '%s\n' "$libs" | grep -q 'not found'; then
    fail "a library of $bin is missing: $(printf '%s\n' "$libs" | grep 'not found')"
fi
paths=$(printf '%s\n' "$libs" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[ -n "$paths" ] || fail "ldd listed no library for $bin: $libs"
for p in $paths; do
    # The path the binary asks for (the loader's is written into the binary), holding the
    # file itself, not a symlink.
    mkdir -p "$dest$(dirname "$p")"
    cp -L "$p" "$dest$p"
    chmod 0755 "$dest$p"
done

printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$uid" "$gid" >"$dest/etc/passwd"
printf 'root:x:0:\nnonroot:x:%s:\n' "$gid" >"$dest/etc/group"
printf 'hosts: files dns\n' >"$dest/etc/nsswitch.conf"
chmod 0644 "$dest/etc/passwd" "$dest/etc/group" "$dest/etc/nsswitch.conf"
mkdir -p "$dest/tmp"
chmod 1777 "$dest/tmp"

# Package records, where the build machine is Debian's (the builder image is).
if command -v dpkg-query >/dev/null 2>&1; then
    pkgs="ca-certificates"
    for p in $paths; do
        owner=$(dpkg-query -S "$p" 2>/dev/null | head -n 1 | cut -d: -f1) || true
        [ -n "$owner" ] && pkgs="$pkgs $owner"
    done
    mkdir -p "$dest/var/lib/dpkg/status.d"
    for pkg in $(echo "$pkgs" | tr ' ' '\n' | sort -u); do
        dpkg-query -s "$pkg" >"$dest/var/lib/dpkg/status.d/$pkg"
        chmod 0644 "$dest/var/lib/dpkg/status.d/$pkg"
        if [ -r "/usr/share/doc/$pkg/copyright" ]; then
            install -D -m 0644 "/usr/share/doc/$pkg/copyright" "$dest/usr/share/doc/$pkg/copyright"
        fi
    done
fi
