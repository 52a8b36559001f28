# orchgate container image. Build: docker build -t orchgate .
# Behind a TLS-intercepting proxy: --build-arg PIP_CERT=/path/in/build/context-or-mount.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN set -eu; \
    [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    python3 -m venv /opt/orchgate; \
    /opt/orchgate/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin orchgate \
 && mkdir -p /var/log/orchgate && chown 10001 /var/log/orchgate
COPY --from=build /opt/orchgate /opt/orchgate
COPY policies /etc/orchgate/policies
ENV PATH=/opt/orchgate/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8080
VOLUME ["/var/log/orchgate"]
ENTRYPOINT ["orchgate"]
CMD ["serve", "--config", "/etc/orchgate/orchgate.yaml"]
