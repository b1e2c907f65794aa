#!/usr/bin/env bash
# Make the secret files docker/compose.yaml mounts (the compose "init step").
#
#   bash docker/init-secrets.sh [DIR]      # default: docker/secrets (git-ignored)
#
# Writes, each only if missing (never overwrites: a new KEK would orphan every key
# wrapped under the old one, a new CA every phone configured with the old one):
#   kek          key-encryption key for keys at rest in Redis   (secconf kms init-kek)
#   edge-token   bearer token of the media edge's control API  (secconf edge init-token)
#   ami-secret   Asterisk manager password for the watcher
#   focus.psk    the focus's PSK at the KMS (KMS mode)
#   mixer-token  the join-token secret of Kamailio's module and Asterisk's dialplan
#   tls/         throwaway CA, Kamailio's certificate and key  (secconf tls init)
# every private file mode 0600, then hands them to uid 10001, the user every secconf
# image runs as (the key loaders refuse files that group or others may read).
#
# Needs the `secconf` command (`make setup` makes .venv/bin/secconf; or run it inside
# the services image).  Environment:
#   SECCONF_PUBLIC_HOST     the address or name phones use for Kamailio (default 127.0.0.1)
#   SECCONF_SIP_DOMAIN      the conference domain (default conf.example.com, as secconf.toml)
#   SECCONF_SECRETS_OWNER   uid:gid to give the files (default 10001:10001; empty: keep)
# No secret is printed: only paths and the CA's fingerprint.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-$here/secrets}
public_host=${SECCONF_PUBLIC_HOST:-127.0.0.1}
domain=${SECCONF_SIP_DOMAIN:-conf.example.com}
owner=${SECCONF_SECRETS_OWNER-10001:10001}

secconf=${SECCONF_BIN:-}
if [[ -z $secconf ]]; then
  if [[ -x $here/../.venv/bin/secconf ]]; then secconf=$here/../.venv/bin/secconf
  else secconf=$(command -v secconf || true); fi
fi
[[ -n $secconf && -x $secconf ]] || { echo "init-secrets: no secconf command (make setup)" >&2; exit 1; }
python=$(dirname "$secconf")/python3
[[ -x $python ]] || python=python3

umask 077
mkdir -p "$dir"
chmod 0700 "$dir"

[[ -e $dir/kek ]] || "$secconf" kms init-kek "$dir/kek"
[[ -e $dir/edge-token ]] || "$secconf" edge init-token "$dir/edge-token"
if [[ ! -e $dir/ami-secret ]]; then
  "$python" -c 'import secrets, sys; open(sys.argv[1], "x").write(secrets.token_urlsafe(24) + "\n")' \
    "$dir/ami-secret"
  echo "wrote a new AMI secret to $dir/ami-secret (mode 0600)"
fi
if [[ ! -e $dir/focus.psk ]]; then
  "$python" -c 'import sys; from secconf.store import generate_key_file; generate_key_file(sys.argv[1], "PSK")' \
    "$dir/focus.psk"
  echo "wrote a new focus PSK to $dir/focus.psk (mode 0600)"
fi
if [[ ! -e $dir/mixer-token ]]; then
  "$python" -c 'import sys; from secconf.store import generate_key_file; generate_key_file(sys.argv[1], "mixer token secret")' \
    "$dir/mixer-token"
  echo "wrote a new mixer join-token secret to $dir/mixer-token (mode 0600)"
fi
if [[ ! -e $dir/tls/ca.pem ]]; then
  hosts=(--host "$public_host")
  for extra in "$domain" localhost 127.0.0.1; do
    [[ $extra == "$public_host" ]] || hosts+=(--host "$extra")
  done
  "$secconf" tls init "$dir/tls" "${hosts[@]}"
fi
chmod 0600 "$dir/kek" "$dir/edge-token" "$dir/ami-secret" "$dir/focus.psk" "$dir/mixer-token" \
  "$dir/tls/ca.key" "$dir/tls/server.key"

if [[ -n $owner ]]; then
  if ! chown -R "$owner" "$dir" 2>/dev/null; then
    echo "init-secrets: cannot give $dir to $owner; run: sudo chown -R $owner $dir" >&2
    exit 1
  fi
fi
echo "secrets in $dir (owner ${owner:-unchanged})"
