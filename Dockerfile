# One image for the web app, the workers and the migration job.
# GPU hosts: build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY medplib medplib
COPY webapp webapp
COPY worker worker
COPY migrations migrations
COPY alembic.ini app.py ./
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install -c constraints.txt .
EXPOSE 7860
CMD ["medplib", "serve"]
