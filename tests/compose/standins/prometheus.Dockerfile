# A stand-in for prom/prometheus, for the compose run where no image registry is reachable (tests/compose): Debian's
# Prometheus laid out as in the official image — the server as the entrypoint, /etc/prometheus, /prometheus owned
# by nobody — with wget for the healthcheck. docker-compose.yml names the official image; the stand-in takes its tag.
FROM debian:bookworm
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget ca-certificates \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
