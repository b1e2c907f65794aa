#!/bin/sh
# Entry point of the Asterisk image: render the secconf templates, then run Asterisk.
#
# config/asterisk/ and dialplan/ (under /opt/secconf/src) are rendered into /etc/asterisk
# by the same renderer the tests use (python3 -m secconf.asterisk.config).  The AMI secret
# is read from its file (a compose secret), never passed on a command line.  Values not
# given keep the renderer's defaults (SIP 127.0.0.1:5080, AMI 127.0.0.1:5038, RTP
# 20000-20999): the compose services share one network namespace, so they match
# config/kamailio/secconf.toml and config/watcher.toml as shipped.
set -eu
secret_file=${SECCONF_AMI_SECRET_FILE:-/etc/secconf/ami-secret}
if [ ! -r "$secret_file" ]; then
  echo "secconf-asterisk: cannot read the AMI secret file $secret_file" >&2
  exit 1
fi
python3 -m secconf.asterisk.config /etc/asterisk \
  "SYSTEM_NAME=${SECCONF_SYSTEM_NAME:-secconf-mixer}" \
  --file "AMI_SECRET=$secret_file"
exec /usr/sbin/asterisk -f "$@"
