# The Leash broker, its data directory and its key file as volumes.
#   docker build -t leash .
#   leash keygen --out keys/keys.toml && sudo chown 10001 keys/keys.toml   # mode 0600, for uid 10001
#   docker run -d --name leash -p 7420:7420 -p 9420:9420 \
#     -v leash-data:/data -v "$PWD/keys:/keys:ro" --stop-timeout 30 leash
# Every setting is a LEASH_* variable (docs/configuration.md): docker run -e LEASH_FSYNC=never ...
# Binding 0.0.0.0 inside the container is what makes the published port work,
# so protected mode requires the key file (clients connect with the same key).
# TLS: mount a certificate and its key and set LEASH_TLS_CERT and LEASH_TLS_KEY.
# Only on a network you trust entirely: -e LEASH_KEY_FILE= -e LEASH_INSECURE_NO_AUTH=true
# Faktory's clients too: add -p 7419:7419 and -e LEASH_FAKTORY_PORT=7419 (docs/faktory.md).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY protocol ./protocol
COPY broker ./broker
COPY client ./client
COPY web ./web
COPY leash ./leash
RUN pip install --no-cache-dir . && useradd --system --uid 10001 --no-create-home leash \
    && mkdir /data /keys && chown leash /data && chmod 0700 /data
# The broker's settings; LEASH_DATA_DIR also tells `leash ping` and `leash stats` where the
# admin socket is, so `docker exec leash leash stats` works.
ENV LEASH_HOST=0.0.0.0 \
    LEASH_DATA_DIR=/data \
    LEASH_KEY_FILE=/keys/keys.toml \
    LEASH_METRICS_HOST=0.0.0.0 \
    LEASH_METRICS_PORT=9420 \
    PYTHONUNBUFFERED=1
USER leash
VOLUME ["/data"]
EXPOSE 7420 9420
# `leash ping` asks the broker over its admin socket and gives up after 1 s.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["leash", "ping", "--timeout-s", "1"]
# SIGTERM: stop accepting, flush the journal, write a snapshot, exit 0. The broker is
# PID 1 (exec form), so the signal reaches it; give it a --stop-timeout for the snapshot.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "leash.broker", "serve"]
CMD []
