# Tactful on the embedded default: one SQLite file in a volume, the example policies.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY models ./models
COPY examples ./examples
RUN pip install --no-cache-dir .
VOLUME /data
EXPOSE 8000
# TACTFUL_SECRET keys user ids (HMAC); without it a secret is generated and kept in the store.
CMD ["tactful", "serve", "--host", "0.0.0.0", "--port", "8000", "--db", "/data/tactful.db", "--policies", "examples/policies"]
