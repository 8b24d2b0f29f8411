FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    PRIVATE_MEDIA_ROOT=/var/lib/marketplace/private_media

WORKDIR /app

# Dependencies first so code changes don't invalidate this layer.
COPY requirements/ requirements/
RUN pip install -r requirements/base.txt

COPY . .

# Production settings demand SECRET_KEY/ALLOWED_HOSTS/LEDGER_SIGNING_KEY; these build-only values
# never reach the running containers (compose supplies the real ones).
RUN SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    LEDGER_SIGNING_KEY="$(python -c 'import secrets; print(secrets.token_hex(32))')" \
    ALLOWED_HOSTS=localhost DATABASE_URL=postgres://build/none REDIS_URL=redis://build/0 \
    sh -c 'python manage.py collectstatic --noinput && python manage.py compilecatalogs'

# The code stays root's (the app cannot change it); the private media directory is the app
# user's, and a new named volume mounted there starts as a copy of it: owner included.
RUN useradd --system --uid 10001 --no-create-home app \
    && mkdir -p "$PRIVATE_MEDIA_ROOT" && chown app:app "$PRIVATE_MEDIA_ROOT" && chmod 700 "$PRIVATE_MEDIA_ROOT"
USER app

EXPOSE 8000
# Liveness of web (worker and beat override it in docker-compose.yml). No curl in the slim
# image: Python asks. /healthz answers plain http on 127.0.0.1 (it is before the HTTPS redirect).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["gunicorn", "config.wsgi:application", "-c", "python:operations.gunicorn", "--bind", "0.0.0.0:8000", "--workers", "3"]
