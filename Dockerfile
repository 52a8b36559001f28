# orchgate container image.
#
#   docker build -t orchgate .        (or: buildah bud --format docker -t orchgate .)
#
# Behind a TLS-intercepting proxy, mount its CA bundle for the build and point pip at it:
#   --volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt
# and/or use a package mirror: --build-arg PIP_INDEX_URL=https://mirror.example/simple
#
# At run time: mount the configuration at /etc/orchgate/orchgate.yaml (policies default to the
# examples in /etc/orchgate/policies — mount your own over them), the upstream secrets where
# the configuration says (/run/secrets/…), and a writable volume at /var/log/orchgate for the
# audit trail. The image runs as uid 10001 and works with a read-only root filesystem.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# Wheels only: nothing is compiled, so the build stage needs no compiler either. pip and
# setuptools leave the virtualenv afterwards: the final image installs nothing at run time.
RUN set -eu; \
    [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    python3 -m venv /opt/orchgate; \
    /opt/orchgate/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        --no-warn-script-location . ; \
    /opt/orchgate/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="orchgate" \
      org.opencontainers.image.description="Identity-aware reverse proxy for the Apache Airflow and Prefect APIs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/orchgate/orchgate" \
      org.opencontainers.image.documentation="https://github.com/orchgate/orchgate#run-with-docker"
# The code and the example policies belong to root and are read-only for the service user; the
# audit directory is the one place it writes: mount a volume there. (No VOLUME instruction: it
# would make an anonymous volume nobody manages, and buildah's chroot runs let it shadow an
# explicit bind mount.)
COPY --from=build /opt/orchgate /opt/orchgate
COPY policies /etc/orchgate/policies
RUN mkdir -p /var/log/orchgate && chown 10001:10001 /var/log/orchgate && chmod 0750 /var/log/orchgate
ENV PATH=/opt/orchgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /etc/orchgate
EXPOSE 8080 9095
# No curl in slim images: the image's own Python asks for liveness.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/_orchgate/livez', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["orchgate"]
CMD ["serve", "--config", "/etc/orchgate/orchgate.yaml"]
