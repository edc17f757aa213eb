# One image for every service; the command picks the service and the role:
#   python main.py <order|payment|inventory|notification|orchestrator|monitoring> <api|worker>
#   python main.py inventory seed   (once, before inventory starts on a fresh database)
# It holds the runtime only (shared/, services/, main.py, config.yaml): development tooling
# (devstack/), the load tests (load/) and the test suite stay out (see .dockerignore).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ENVIRONMENT=production LOG_FORMAT=json
WORKDIR /app

COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
# pyproject's package list also names load and devstack (for the development install); they are not
# in this build context, so this installs shared and services only.
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 app
COPY config.yaml main.py ./

USER app
