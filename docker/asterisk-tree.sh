#!/usr/bin/env bash
# A minimal Debian sid tree with Asterisk 22 (not packaged for Debian 12), built once,
# cached as a compressed tarball outside the repository, restored in seconds.
#
#   docker/asterisk-tree.sh build            build the tarball if it is missing (idempotent)
#   docker/asterisk-tree.sh rebuild          build it again even if present
#   docker/asterisk-tree.sh restore DIR      build if needed, then unpack the tree into DIR
#                                            (DIR must be empty or absent; a tree already
#                                            restored from the same tarball is kept as is)
#   docker/asterisk-tree.sh path             print the tarball's path
#   docker/asterisk-tree.sh version          print the Asterisk version inside the tarball
#   docker/asterisk-tree.sh pinned           print the version docker/asterisk.lock pins
#   docker/asterisk-tree.sh update           pin sid's current Asterisk in docker/asterisk.lock,
#                                            then build its tree (an explicit, tested update)
#
# The tree holds exactly the Asterisk that docker/asterisk.lock names: apt installs that
# version (checked against sid's signed Release file), the tarball's name carries it, and a
# tarball of another version is never restored.  When sid has moved on, the build stops and
# says how to update.
#
# Environment:
#   SECCONF_ASTERISK_CACHE    the tarball (default /var/cache/secconf/asterisk-sid-VERSION.tar.zst)
#   SECCONF_DEBIAN_MIRROR     the mirror for debootstrap (default http://deb.debian.org/debian)
#
# Building needs root, debootstrap and zstd (docker/bootstrap-debian.sh installs them) and
# takes one to two minutes on a good network.  The build works in a private mount namespace
# (unshare --mount) so the /proc it mounts for the package scripts disappears with it, even
# when the build is killed.  Concurrent callers (parallel test sessions) serialise on a lock
# next to the tarball; the tarball appears atomically (rename), so a half-built one is never
# restored.  Nothing is started or left mounted by this script; the tests' fixture
# (tests/fixtures/asterisk_server.py) runs Asterisk from the restored tree with
# `unshare --mount --pid --fork --mount-proc=DIR/proc chroot DIR asterisk -f`.
set -euo pipefail

LOCK=$(cd "$(dirname "$0")" && pwd)/asterisk.lock
MIRROR=${SECCONF_DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() { echo "asterisk-tree: $*" >&2; exit 1; }
log() { echo "asterisk-tree: $*" >&2; }

pinned_version() {
  local version
  version=$(sed -n 's/^ASTERISK_DEB_VERSION=//p' "$LOCK" 2>/dev/null)
  [[ -n $version ]] || die "no ASTERISK_DEB_VERSION in $LOCK"
  printf '%s' "$version"
}

PINNED=$(pinned_version)
# The file name carries the version (':' and '~' are kept out of it).
CACHE=${SECCONF_ASTERISK_CACHE:-/var/cache/secconf/asterisk-sid-$(printf '%s' "$PINNED" | tr ':~' '._').tar.zst}
PACKAGES=("asterisk=$PINNED" "asterisk-modules=$PINNED")

sid_version() {
  # What sid carries today: the Packages index, no tree needed.
  curl -fsS --max-time 60 "$MIRROR/dists/sid/main/binary-amd64/Packages.xz" | xz -dc \
    | awk '/^Package: asterisk$/ {p = 1} p && /^Version: / {print $2; exit}'
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
}

# -- build ---------------------------------------------------------------------------

build_tree() {
  # $1: an empty directory on the cache's file system
  local dir=$1
  command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
  command -v zstd >/dev/null || die "zstd missing (apt-get install zstd)"
  log "debootstrap --variant=minbase sid $dir ($MIRROR)"
  debootstrap --variant=minbase sid "$dir" "$MIRROR" >"$dir.debootstrap.log" 2>&1 \
    || { tail -20 "$dir.debootstrap.log" >&2; die "debootstrap failed"; }
  rm -f "$dir.debootstrap.log"

  # invoke-rc.d asks policy-rc.d: 101 = "action forbidden", so no package starts a service.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 755 "$dir/usr/sbin/policy-rc.d"
  # No documentation, man pages or translations in the tree (dpkg honours this at unpack).
  mkdir -p "$dir/etc/dpkg/dpkg.cfg.d"
  cat >"$dir/etc/dpkg/dpkg.cfg.d/01-secconf-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true

  log "apt-get install --no-install-recommends ${PACKAGES[*]} (inside the tree)"
  # A private mount namespace: /proc mounted here vanishes with the namespace.
  unshare --mount --propagation private -- /bin/sh -euc '
    dir=$1; shift
    mount -t proc proc "$dir/proc"
    chroot "$dir" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
      apt-get install -y -q --no-install-recommends "$@"
    umount "$dir/proc"
  ' sh "$dir" "${PACKAGES[@]}" >"$dir.apt.log" 2>&1 || {
    tail -30 "$dir.apt.log" >&2
    if grep -q "Version '.*' for 'asterisk' was not found" "$dir.apt.log"; then
      die "Debian sid no longer carries asterisk $PINNED (docker/asterisk.lock); it has" \
        "$(sid_version || echo '?'). Take it explicitly: docker/asterisk-tree.sh update," \
        "then make test, then commit docker/asterisk.lock"
    fi
    die "apt-get install failed inside the tree"
  }
  rm -f "$dir.apt.log"

  local installed
  installed=$(chroot "$dir" dpkg-query -W -f='${Version}' asterisk)
  [[ $installed == "$PINNED" ]] || die "the tree has asterisk $installed, the lock pins $PINNED"
  printf '%s' "$installed" >"$dir/etc/secconf-asterisk-version"
  # Every package of the tree and its version: what else sid gave us this time.
  chroot "$dir" dpkg-query -W -f='${Package} ${Version}\n' >"$dir/etc/secconf-tree-manifest"
  # Clean: package caches, lists, docs, logs; the runtime directory Asterisk needs.
  chroot "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/usr/share/locale/* "$dir"/var/cache/debconf/*-old "$dir"/var/log/*.log \
    "$dir"/var/log/apt/* "$dir"/tmp/* "$dir"/var/tmp/*
  mkdir -p "$dir/run/asterisk" "$dir/proc"
  [[ -x "$dir/usr/sbin/asterisk" ]] || die "no /usr/sbin/asterisk in the tree"
}

build() {
  need_root
  local cache_dir work tmp_tar
  cache_dir=$(dirname "$CACHE")
  mkdir -p "$cache_dir"
  exec 9>"$CACHE.lock"
  flock 9
  if [[ -s $CACHE && ${1:-} != force ]]; then
    return 0
  fi
  local started=$SECONDS
  work=$(mktemp -d "$cache_dir/.asterisk-tree.XXXXXX")
  tmp_tar="$work.tar.zst"
  # Whatever happens, remove the half-built tree (nothing is mounted outside the namespace).
  trap 'rm -rf --one-file-system "$work" "$tmp_tar" "$work".*.log' EXIT
  build_tree "$work"
  log "packing $(du -sh "$work" | cut -f1) into $CACHE"
  tar -C "$work" --numeric-owner --xattrs -cf - . | zstd -q -T0 -6 -o "$tmp_tar"
  mv -f "$tmp_tar" "$CACHE"
  rm -rf --one-file-system "$work"
  trap - EXIT
  log "built Asterisk $(cat_version) in $((SECONDS - started)) s: $(du -h "$CACHE" | cut -f1)"
}

cat_version() {
  zstd -dcq "$CACHE" | tar -xOf - ./etc/secconf-asterisk-version 2>/dev/null || echo unknown
}

# -- restore -------------------------------------------------------------------------

restore() {
  local dir=${1:?restore needs a directory}
  build
  local cached
  cached=$(cat_version)
  [[ $cached == "$PINNED" ]] || die "$CACHE holds asterisk $cached, docker/asterisk.lock pins $PINNED"
  local stamp
  stamp="$(stat -c '%s %Y' "$CACHE")"
  if [[ -x $dir/usr/sbin/asterisk && -f $dir/.secconf-tree && $(cat "$dir/.secconf-tree") == "$stamp" ]]; then
    return 0
  fi
  mkdir -p "$dir"
  if [[ -n $(ls -A "$dir") ]]; then
    die "$dir is not empty and not a tree restored from $CACHE"
  fi
  zstd -dcq -T0 "$CACHE" | tar -C "$dir" --numeric-owner -xf -
  mkdir -p "$dir/run/asterisk" "$dir/proc"
  printf '%s' "$stamp" >"$dir/.secconf-tree"
}

# -- update --------------------------------------------------------------------------

update() {
  local current
  current=$(sid_version) || die "cannot read sid's Packages index from $MIRROR"
  [[ -n $current ]] || die "sid's Packages index names no asterisk"
  if [[ $current == "$PINNED" ]]; then
    log "docker/asterisk.lock already pins sid's asterisk $current"
  else
    log "pinning asterisk $current (was $PINNED) in $LOCK"
    sed -i "s/^ASTERISK_DEB_VERSION=.*/ASTERISK_DEB_VERSION=$current/" "$LOCK"
  fi
  exec "$0" build
}

case ${1:-} in
  build) build ;;
  rebuild) build force ;;
  restore) need_root; restore "${2:-}" ;;
  path) echo "$CACHE" ;;
  version) [[ -s $CACHE ]] || die "no tarball at $CACHE"; cat_version ;;
  pinned) echo "$PINNED" ;;
  update) need_root; update ;;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
