# One image for the API and the workers. GPU hosts run the same image with the NVIDIA
# container runtime; torch finds CUDA by itself.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 KEIKO_DATA_DIR=/data
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY workers ./workers
COPY models ./models
COPY keiko ./keiko
COPY migrations ./migrations
RUN pip install --upgrade pip && pip install .

RUN useradd --create-home --uid 10001 keiko && mkdir -p /data && chown keiko /data
USER keiko
VOLUME ["/data"]
EXPOSE 8000
CMD ["python", "-m", "service.cli", "api", "--host", "0.0.0.0", "--port", "8000"]
