# One image for every service; the command picks the service and the role:
#   python main.py <order|payment|inventory|notification|orchestrator|monitoring> <api|worker>
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ENVIRONMENT=production LOG_FORMAT=json
WORKDIR /app

COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY load ./load
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 app
COPY config.yaml main.py ./

USER app
