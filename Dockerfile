# Runs the Leash broker with its data directory as a volume.
#   docker build -t leash .
#   docker run -p 7420:7420 -v leash-data:/data leash
# Binding 0.0.0.0 inside the container is what makes the published port work;
# publish it only on trusted networks (authentication and TLS are not built yet).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY broker ./broker
COPY client ./client
RUN pip install --no-cache-dir . && useradd --system --uid 10001 leash \
    && mkdir /data && chown leash /data
USER leash
VOLUME ["/data"]
EXPOSE 7420
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "broker", "serve", "--data-dir", "/data", "--host", "0.0.0.0"]
