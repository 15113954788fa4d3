# syntax=docker/dockerfile:1.7
# SrvThreds images: one build, one target per role.
#
#   docker build --target operator          -t ghcr.io/srvthreds/srvthreds-operator:dev .
#   docker build --target engine            -t ghcr.io/srvthreds/srvthreds:dev .
#   docker build --target session-agent     -t ghcr.io/srvthreds/srvthreds-session-agent:dev .
#   docker build --target persistence-agent -t ghcr.io/srvthreds/srvthreds-persistence-agent:dev .
#
# The session and persistence agents are the engine package started with another command
# (`srvthreds-engine agent session` / `srvthreds-engine agent persistence`, built by the engine's
# backends-and-agents issue), so their targets only preset SRVTHREDS_COMPONENT on the engine
# image, whose entrypoint picks the command from it. The operator runs the engine image for all
# three components and sets SRVTHREDS_COMPONENT on each workload.
#
# Every runtime image: no build tools, a fixed non-root uid/gid (numeric, so the kubelet can
# verify runAsNonRoot), bytecode compiled at build time so a read-only root filesystem works,
# no secrets (configuration comes from the environment at run time).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---------------------------------------------------------------------------------------------
# build: the dependencies of each role in its own virtualenv (cached until pyproject.toml
# changes), then one wheel holding both packages, installed without dependencies on top.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip install 'pip>=25.1' 'build>=1.2'
COPY pyproject.toml README.md ./
# Requirement files per role from pyproject.toml, so these layers survive source edits.
RUN python - <<'EOF'
import tomllib

with open("pyproject.toml", "rb") as source:
    project = tomllib.load(source)["project"]
for role in ("operator", "engine"):
    requirements = project["dependencies"] + project["optional-dependencies"][role]
    with open(f"/tmp/requirements-{role}.txt", "w", encoding="utf-8") as out:
        out.write("\n".join(requirements) + "\n")
EOF
# Separate venvs keep the operator image free of the engine's broker clients and vice versa.
RUN --mount=type=cache,target=/root/.cache/pip \
    for role in operator engine; do \
        python -m venv "/opt/srvthreds-$role" \
     && "/opt/srvthreds-$role/bin/pip" install --compile -r "/tmp/requirements-$role.txt" \
     || exit 1; \
    done
COPY operator/ operator/
COPY engine/ engine/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m build --wheel --outdir /wheels . \
 && for role in operator engine; do \
        "/opt/srvthreds-$role/bin/pip" install --no-deps --compile /wheels/srvthreds-*.whl \
     || exit 1; \
    done
# pip is not needed at run time; removing it shrinks the image and its CVE surface.
RUN for role in operator engine; do \
        "/opt/srvthreds-$role/bin/python" -m pip uninstall --yes --quiet pip || exit 1; \
    done

# ---------------------------------------------------------------------------------------------
# runtime-base: what every role shares.
FROM ${PYTHON_IMAGE} AS runtime-base
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="srvthreds" \
      org.opencontainers.image.source="https://github.com/srvthreds/srvthreds" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# A uid above the usual host ranges (the chart's runAsUser); files stay world-readable, so the
# operator's app pods may run under another non-root uid.
RUN groupadd --system --gid 10001 srvthreds \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin srvthreds
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1
WORKDIR /tmp
USER 10001:10001

# ---------------------------------------------------------------------------------------------
# operator: `srvthreds-operator run`; liveness :8080/healthz, Prometheus :9090/metrics.
FROM runtime-base AS operator
COPY --from=build /opt/srvthreds-operator /opt/srvthreds-operator
ENV PATH=/opt/srvthreds-operator/bin:$PATH
LABEL org.opencontainers.image.description="SrvThredsCluster Kubernetes operator"
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["srvthreds-operator"]
CMD ["run"]

# ---------------------------------------------------------------------------------------------
# engine: the image the operator runs for all three app components (one `spec.image`). It sets
# no command on those pods, only SRVTHREDS_COMPONENT, so the entrypoint chooses the process:
#   engine            -> srvthreds-engine run --profile "${PROFILE_DIR:-<demo profile>}"
#   session-agent     -> srvthreds-engine agent session
#   persistence-agent -> srvthreds-engine agent persistence
# Arguments given to `docker run IMAGE ...` bypass the choice: `srvthreds-engine ...` runs as is.
# Every role serves /health, /ready and /metrics on $PORT (3001); the session agent also serves
# its clients (HTTP + WebSocket) on $SESSION_PORT (3000).
FROM runtime-base AS engine
COPY --from=build /opt/srvthreds-engine /opt/srvthreds-engine
# The demo profile lets `docker run` work without any mounted configuration.
COPY engine/profiles/ /opt/srvthreds/profiles/
COPY --chmod=0755 <<'EOF' /usr/local/bin/srvthreds-entrypoint
#!/bin/sh
set -eu
if [ "$#" -gt 0 ]; then
    exec srvthreds-engine "$@"
fi
case "${SRVTHREDS_COMPONENT:-engine}" in
    engine) exec srvthreds-engine run --profile "${PROFILE_DIR:-/opt/srvthreds/profiles/demo}" ;;
    session-agent) exec srvthreds-engine agent session ;;
    persistence-agent) exec srvthreds-engine agent persistence ;;
    *) echo "srvthreds-entrypoint: unknown SRVTHREDS_COMPONENT '${SRVTHREDS_COMPONENT}'" >&2; exit 64 ;;
esac
EOF
ENV PATH=/opt/srvthreds-engine/bin:$PATH \
    SRVTHREDS_COMPONENT=engine \
    PORT=3001
LABEL org.opencontainers.image.description="SrvThreds thred engine"
EXPOSE 3001
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3001'), timeout=4).status != 200)"]
ENTRYPOINT ["/usr/local/bin/srvthreds-entrypoint"]

# ---------------------------------------------------------------------------------------------
# session-agent: the engine image started as the session agent (clients on :3000).
FROM engine AS session-agent
ENV SRVTHREDS_COMPONENT=session-agent \
    SESSION_PORT=3000
LABEL org.opencontainers.image.description="SrvThreds session agent"
EXPOSE 3000

# ---------------------------------------------------------------------------------------------
# persistence-agent: the engine image started as the persistence agent (a queue consumer).
FROM engine AS persistence-agent
ENV SRVTHREDS_COMPONENT=persistence-agent
LABEL org.opencontainers.image.description="SrvThreds persistence agent"
