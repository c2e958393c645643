# tandem images. Two targets from one build:
#
#   docker build -t tandem .                              the proxy (the default, last stage)
#   docker build --target vip-agent -t tandem-vip-agent .  the VIP sidecar
#
# The proxy runs unprivileged and never touches addresses. The sidecar shares the proxy
# container's network namespace (`network_mode: service:lb1`, or the same pod) and moves
# the VIPs: see deploy/compose.yaml and README "Run in containers".

# ---- build: dev dependencies, type check, then the package as `npm pack` makes it ------
# The package holds dist/, the JavaScript compiled from src/ at pack time (prepack).
FROM node:24-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run typecheck \
 && mkdir /pkg \
 && npm pack --pack-destination /pkg \
 && mv /pkg/tandem-*.tgz /pkg/tandem.tgz

# ---- common runtime: production dependencies only --------------------------------------
FROM node:24-slim AS runtime
ENV NODE_ENV=production
# tini is PID 1: it reaps the processes a hook leaves behind and forwards SIGTERM and
# SIGHUP to tandem, which Node as PID 1 does not do on its own.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /pkg/tandem.tgz /tmp/tandem.tgz
RUN npm install --global --omit=dev --no-audit --no-fund /tmp/tandem.tgz \
 && rm /tmp/tandem.tgz \
 && npm cache clean --force

# ---- vip-agent: the sidecar that puts the VIPs on the interface ---------------------------
# `ip addr` and arping need CAP_NET_ADMIN and CAP_NET_RAW in the commands the hook runs.
# Linux passes capabilities across exec to a non-root user only as ambient capabilities,
# which Docker and Kubernetes do not set, so the agent runs as root with every other
# capability dropped: `--cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW`. The hook
# says so and stops when the capability is missing.
FROM runtime AS vip-agent
# perl-base (essential, so already there) runs the built-in announcer; iproute2 and
# arping are for scripts/vip-hook.sh (`--hook PATH`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends perl-base iproute2 iputils-arping \
 && rm -rf /var/lib/apt/lists/*
USER 0:0
ENTRYPOINT ["/usr/bin/tini", "--", "tandem", "vip-agent"]
CMD ["--admin", "http://127.0.0.1:9901", "--hook", "builtin"]

# ---- proxy (default target) ----------------------------------------------------------------
# Mount the config at /etc/tandem/tandem.yaml; TANDEM_NODE says which of ha.nodes this
# container is. Logs go to stderr, the access log (when configured) to stdout.
FROM runtime AS proxy
# The `node` user of the official image, by number so that runAsNonRoot can verify it.
USER 1000:1000
# The listener and the admin API of the default config (deploy/tandem.yaml).
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9901/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "tandem"]
CMD ["run", "-c", "/etc/tandem/tandem.yaml"]
