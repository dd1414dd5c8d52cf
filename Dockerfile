# Tactful on the embedded default: one SQLite file in a volume, the example policies.
# The image binds 0.0.0.0, so it refuses to serve until the store holds an API key (README, "Keys"):
#   docker build -t tactful .
#   docker run --rm -v tactful-data:/data tactful tactful keys create --name ops --scopes decide,people:read,people:write,admin
#   docker run -d -p 8000:8000 -v tactful-data:/data tactful
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY service ./service
COPY models ./models
COPY examples ./examples
# the versions the tests passed with (constraints.txt), not whatever is newest on build day
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent tactful \
    && mkdir /data && chown tactful:tactful /data
# not root: the process can write the store in /data and nothing else
USER tactful
VOLUME /data
# every command of the image (serve, keys, db upgrade, backup) works on the store in the volume
ENV TACTFUL_DB=/data/tactful.db
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# TACTFUL_SECRET keys user ids (HMAC); without it a secret is generated and kept in the store.
# Without an API key in the store this refuses to start (add --insecure-no-auth only on a private network).
CMD ["tactful", "serve", "--host", "0.0.0.0", "--port", "8000", "--policies", "examples/policies"]
