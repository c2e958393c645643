# tandem: the proxy image. Production dependencies only, non-root user; mount the config
# and run `tandem run -c`. The VIP sidecar (`tandem vip-agent`) runs from the same image
# with NET_ADMIN and NET_RAW (see docs/ha.md); the proxy itself needs neither.
FROM node:24-slim

ENV NODE_ENV=production
WORKDIR /app

# For the sidecar's hook (scripts/vip-hook.sh): `ip addr` and gratuitous ARP.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 iputils-arping \
 && rm -rf /var/lib/apt/lists/*

COPY package.json package-lock.json ./
# The `node` devDependency pins Node for development; the image already has Node 24.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY bin ./bin
COPY src ./src
COPY scripts ./scripts
COPY conf ./conf

USER node
EXPOSE 8080 9901
ENTRYPOINT ["node", "/app/src/cli.ts"]
CMD ["run", "-c", "/etc/tandem/tandem.yaml"]
