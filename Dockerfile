# syntax=docker/dockerfile:1
# Spillover's service image: `spillover serve` (the REST API) and `spillover run` (the control loop) are the
# same image with different arguments; see deploy/kustomize.
#
#   docker build -t ghcr.io/spillover/spillover:0.1.0 .
#
# Stage 1 builds Spillover's wheel and collects the wheels of everything it depends on, so the final image
# installs offline and carries no compiler, source tree or pip cache.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# The postgres extra brings the driver the service's store URL (postgresql+psycopg://) needs; the embedded
# SQLite store needs none.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels "$(ls /wheels/spillover-*.whl)[postgres]"

# Stage 2: the runtime, as an unprivileged user whose numeric id the Deployments' runAsUser also names.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The pods run with a read-only root filesystem and an emptyDir on /tmp: whatever wants a home or a
    # cache directory (matplotlib, the kubernetes client) finds it there.
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib

RUN groupadd --system --gid 10001 spillover \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin spillover

# The wheels are bind-mounted from the build stage (BuildKit), so they are not left behind in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "spillover[postgres]"

USER 10001:10001
WORKDIR /tmp
# 8080: `spillover serve --port 8080`; 9090: `spillover run --metrics-port 9090`
EXPOSE 8080 9090
ENTRYPOINT ["spillover"]
CMD ["--help"]
