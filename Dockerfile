# One image for the backend and the workers; docker-compose.yml picks the command.
# CPU torch by default (small); for CUDA: --build-arg TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
FROM python:3.11-slim
ARG TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# HOST: in a container the backend listens on all its interfaces (the port is published by whoever runs it;
# docker-compose.yml publishes it on BIND_ADDRESS only, 127.0.0.1 by default)
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DATA_DIR=/data MODEL_DIR=/models HF_HOME=/hf-cache HOST=0.0.0.0 PORT=9090
WORKDIR /app
RUN pip install $TORCH
COPY pyproject.toml README.md ./
COPY backend backend
COPY workers workers
COPY label_config.xml label_config_ranker.xml ./
RUN pip install . && python -m workers.runtime.bootstrap --unpack \
 && useradd --create-home --uid 10001 rlhf && mkdir -p /data /models /hf-cache /model-cache \
 && chown rlhf /data /models /hf-cache /model-cache
USER rlhf
VOLUME ["/data", "/models", "/hf-cache"]
EXPOSE 9090
# exec form: gunicorn is PID 1 and gets SIGTERM (graceful stop); settings in backend/http/gunicorn_conf.py
CMD ["gunicorn", "-c", "python:backend.http.gunicorn_conf", "backend.http.wsgi:app"]
