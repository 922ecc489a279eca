# An S3-compatible object store for docker-compose.s3.yml: moto's server mode, built from PyPI. It keeps
# objects in memory and accepts any credentials: for a demo and tests/compose_check.sh on a private network.
# In production point MODEL_DIR and AWS_* at your own store (AWS S3, MinIO, Ceph) instead.
FROM python:3.11-slim
RUN pip install --no-cache-dir "moto[server]==5.2.6" && useradd --create-home --uid 10002 objectstore
USER objectstore
EXPOSE 5000
CMD ["moto_server", "-H", "0.0.0.0", "-p", "5000"]
