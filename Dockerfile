# Runs the Leash broker with its data directory and its key file as volumes.
#   docker build -t leash .
#   leash keygen --out keys/keys.toml && sudo chown 10001 keys/keys.toml   # mode 0600, for uid 10001
#   docker run -p 7420:7420 -v leash-data:/data -v "$PWD/keys:/keys:ro" leash
# Binding 0.0.0.0 inside the container is what makes the published port work,
# so protected mode requires the key file (clients connect with the same key).
# TLS: mount a certificate and key and add --tls-cert/--tls-key to the command.
# Only on a network you trust entirely: docker run ... leash --insecure-no-auth
# Faktory's clients too: add -p 7419:7419 and --faktory-port 7419 (docs/faktory.md).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY broker ./broker
COPY client ./client
COPY leash ./leash
RUN pip install --no-cache-dir . && useradd --system --uid 10001 leash \
    && mkdir /data /keys && chown leash /data
USER leash
VOLUME ["/data"]
EXPOSE 7420
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "leash.broker", "serve", "--data-dir", "/data", "--host", "0.0.0.0"]
CMD ["--key-file", "/keys/keys.toml"]
