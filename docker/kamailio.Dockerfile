# Kamailio 5.6 (Debian 12) with app_python3, the tls module and the secconf KEMI module.
# Build from the repository root:  docker build -f docker/kamailio.Dockerfile -t secconf/kamailio:0.1.0 .
# The configuration files are the repository's config/kamailio/ ones (copied here as
# defaults; docker/compose.yaml mounts them read-only over these); no secret is baked in.

ARG DEBIAN=debian:12.6-slim

FROM ${DEBIAN} AS build
# Versions come from the pinned Debian release (see services.Dockerfile, DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md docker/requirements-runtime.lock ./
COPY plugin/ plugin/
# Exactly the lock's packages (by hash), then the project without resolving again.
RUN python3 -m venv /opt/secconf/venv \
    && /opt/secconf/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       --require-hashes --no-deps -r requirements-runtime.lock \
    && /opt/secconf/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       --no-deps --no-build-isolation /src

FROM ${DEBIAN}
# Kamailio embeds Debian's /usr/bin/python3: the venv from the build stage uses the same one.
# Release-pinned, not version-pinned (DL3008): see the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       kamailio kamailio-python3-modules kamailio-tls-modules python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 secconf \
    && useradd --system --uid 10001 --gid secconf --home-dir /var/lib/secconf --create-home \
       --shell /usr/sbin/nologin secconf \
    && install -d -o secconf -g secconf -m 0750 /run/kamailio
COPY --from=build /opt/secconf/venv /opt/secconf/venv
COPY config/kamailio/secconf_kemi.py /usr/share/secconf/secconf_kemi.py
COPY config/kamailio/kamailio.cfg /etc/secconf/kamailio.cfg
COPY config/kamailio/tls.cfg /etc/secconf/tls.cfg
COPY config/kamailio/secconf.toml /etc/secconf/kamailio.toml
ENV SECCONF_KAMAILIO_CONFIG=/etc/secconf/kamailio.toml \
    SECCONF_PYTHONPATH=/opt/secconf/venv/lib/python3.11/site-packages \
    PYTHONDONTWRITEBYTECODE=1
# SIP ports above 1024: no root needed.  uid 10001 owns the secret files.
USER 10001:10001
ENTRYPOINT ["/usr/sbin/kamailio", "-DD", "-E", "-f", "/etc/secconf/kamailio.cfg", "-Y", "/run/kamailio"]
CMD ["-l", "udp:127.0.0.1:5060"]
