#!/bin/sh
# Entry point of the Asterisk image: render the secconf templates, then run Asterisk.
#
# config/asterisk/ and dialplan/ (under /opt/secconf/src) are rendered into /etc/asterisk
# by the same renderer the tests use (python3 -m secconf.asterisk.config).  The AMI secret
# and the join-token secret shared with Kamailio's module are read from their files
# (compose secrets), never passed on a command line; only keys derived from the latter
# reach /etc/asterisk (secconf-mixer-token.key, mode 0600).  Values not
# given keep the renderer's defaults (SIP 127.0.0.1:5080, AMI 127.0.0.1:5038, RTP
# 20000-20999): the compose services share one network namespace, so they match
# config/kamailio/secconf.toml and config/watcher.toml as shipped.
set -eu
secret_file=${SECCONF_AMI_SECRET_FILE:-/etc/secconf/ami-secret}
token_file=${SECCONF_MIXER_TOKEN_FILE:-/etc/secconf/mixer-token}
for file in "$secret_file" "$token_file"; do
  if [ ! -r "$file" ]; then
    echo "secconf-asterisk: cannot read the secret file $file" >&2
    exit 1
  fi
done
python3 -m secconf.asterisk.config /etc/asterisk \
  "SYSTEM_NAME=${SECCONF_SYSTEM_NAME:-secconf-mixer}" \
  --file "AMI_SECRET=$secret_file" \
  --file "MIXER_TOKEN_SECRET=$token_file"
exec /usr/sbin/asterisk -f "$@"
