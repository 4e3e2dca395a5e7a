# syntax=docker/dockerfile:1

# Build stage: install pxproxy and its dependencies into a virtualenv.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/pxproxy
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pxproxy ./pxproxy
RUN /opt/pxproxy/bin/pip install --no-cache-dir .

# Runtime stage: the virtualenv only, run as an unprivileged user.
FROM python:3.11-slim
ENV PATH=/opt/pxproxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 pxproxy \
 && useradd --system --uid 10001 --gid pxproxy --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pxproxy
COPY --from=build /opt/pxproxy /opt/pxproxy
# The state store (state.db: sleeping guests, circuit breakers, last-seen addresses), kept
# across restarts in a volume; pxproxy's default state.path when this directory exists.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/pxproxy
VOLUME /var/lib/pxproxy
USER 10001:10001

# 8080: reverse proxy listener; 8081: management API.
# In the container, set listen.api to "0.0.0.0:8081" and configure api.tokens.
EXPOSE 8080 8081

# Healthy when the API answers /health. A degraded inventory (Proxmox unreachable)
# still answers 200, so the container is not restarted while Proxmox is down.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/health', timeout=4)"]

ENTRYPOINT ["pxproxy"]
CMD ["run", "-c", "/etc/pxproxy/pxproxy.yml"]
