# secconf's Python services in one image: `secconf kms serve`, `secconf edge serve`,
# `secconf watcher serve` (and the operator commands, e.g. `secconf kms user add`).
# Build from the repository root:  docker build -f docker/services.Dockerfile -t secconf/services:0.1.0 .
# No secret is baked in: keys, tokens and certificates come as compose secrets (docker/compose.yaml).

ARG DEBIAN=debian:12.6-slim

FROM ${DEBIAN} AS build
# Versions come from the pinned Debian release; Debian drops superseded versions from its
# archive on every security update, so exact version pins would break the build (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md docker/requirements-runtime.lock ./
COPY plugin/ plugin/
# The venv is made with Debian's /usr/bin/python3 (3.11), the interpreter Kamailio's
# app_python3 embeds: the Kamailio image reuses this stage.  Dependencies are exactly the
# lock's (by hash; `make lock` writes it), then the project without resolving again; the
# wheels (cryptography, pylibsrtp) bundle their C libraries.
RUN python3 -m venv /opt/secconf/venv \
    && /opt/secconf/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       --require-hashes --no-deps -r requirements-runtime.lock \
    && /opt/secconf/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       --no-deps --no-build-isolation /src

FROM ${DEBIAN}
# Release-pinned, not version-pinned (DL3008): see the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 secconf \
    && useradd --system --uid 10001 --gid secconf --home-dir /var/lib/secconf --create-home \
       --shell /usr/sbin/nologin secconf
COPY --from=build /opt/secconf/venv /opt/secconf/venv
ENV PATH=/opt/secconf/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# uid 10001 owns the secret files (docker/init-secrets.sh): the key loaders refuse
# files that group or others can read.
USER 10001:10001
WORKDIR /var/lib/secconf
ENTRYPOINT ["secconf"]
CMD ["--help"]
