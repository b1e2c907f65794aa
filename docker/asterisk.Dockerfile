# Asterisk 22 ConfBridge (Debian sid's asterisk, asterisk-modules: Debian 12 has no Asterisk).
# Build from the repository root:  docker build -f docker/asterisk.Dockerfile -t secconf/asterisk:0.1.0 .
# At start docker/asterisk-entrypoint.sh renders the repository's config/asterisk/ and
# dialplan/ templates (`python3 -m secconf.asterisk.config`) into /etc/asterisk with the
# AMI secret read from its secret file; the templates are copied here as defaults and
# docker/compose.yaml mounts the repository's over them.  No secret is baked in.

FROM debian:sid-20240722-slim
# Asterisk is the version docker/asterisk.lock pins, like the test tree (tests/docker checks the
# two agree); when sid drops it the build fails: take the new one with
# `docker/asterisk-tree.sh update`.
ARG ASTERISK_DEB_VERSION=1:22.10.1+dfsg+~cs6.17.60671434-1
# python3 is whatever sid ships: an exact pin would break within days (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
       "asterisk=${ASTERISK_DEB_VERSION}" "asterisk-modules=${ASTERISK_DEB_VERSION}" \
    && rm -rf /var/lib/apt/lists/* /etc/asterisk/* \
    && groupmod --gid 10001 asterisk \
    && usermod --uid 10001 --gid 10001 asterisk \
    && install -d -o asterisk -g asterisk /run/asterisk \
    && chown -R asterisk:asterisk /etc/asterisk /var/lib/asterisk /var/log/asterisk \
       /var/spool/asterisk /var/cache/asterisk /run/asterisk
# Only the renderer, the sans-IO core whose join-token MAC (core/mixer_token.py, standard
# library only) derives Asterisk's keys, and the templates.
COPY plugin/secconf/__init__.py /opt/secconf/src/plugin/secconf/__init__.py
COPY plugin/secconf/core/ /opt/secconf/src/plugin/secconf/core/
COPY plugin/secconf/asterisk/__init__.py plugin/secconf/asterisk/config.py /opt/secconf/src/plugin/secconf/asterisk/
COPY config/asterisk/ /opt/secconf/src/config/asterisk/
COPY dialplan/ /opt/secconf/src/dialplan/
COPY docker/asterisk-entrypoint.sh /usr/local/bin/secconf-asterisk
ENV PYTHONPATH=/opt/secconf/src/plugin \
    PYTHONDONTWRITEBYTECODE=1
# Asterisk's own user, moved to uid 10001 (the owner of the secret files).
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/secconf-asterisk"]
