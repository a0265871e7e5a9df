# vipd production image: Node 20 on Debian 12 (slim) with Debian's gobgpd, running as a non-root user.
# Build: npm ci && npm run build && npm pack && docker build -t vipd:0.1.0 .
# Under systemd, vipd runs as user vipd with CAP_NET_ADMIN only (config/vipd.service). In a container
# without ambient capabilities (Kubernetes), run it as uid 0 holding NET_ADMIN alone: config/kubeadm/vipd.yaml.
FROM node:20-bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends gobgpd util-linux iproute2 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system vipd \
 && useradd --system --gid vipd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vipd \
 && install -d -o vipd -g vipd -m 0711 /run/vipd \
 && install -d -o vipd -g vipd -m 0700 /var/lib/vipd \
 && install -d -m 0755 /etc/vipd

# The package as `npm pack` made it: bin/vipd, dist/ and proto/, no tests; production dependencies only.
COPY vipd-*.tgz /tmp/
RUN npm install -g --omit=dev --no-audit --no-fund /tmp/vipd-*.tgz && rm /tmp/vipd-*.tgz && vipd version

USER vipd
# 9180: read-only admin API (status page, /status, /metrics), loopback only in the shipped configs.
EXPOSE 6443 2379
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "vipd"]
CMD ["run", "--config", "/etc/vipd/vipd.yaml"]
