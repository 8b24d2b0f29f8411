"""ASGI: the WebSocket routes (notifications.live.routing), served by uvicorn as the `ws`
process. Plain HTTP is answered too (Django's ASGI handler), but production sends it to gunicorn
(config/wsgi.py): BENCHMARKS.md "Live push" has the figures behind that choice."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
# Django first: the routes import models.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from notifications.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_application, "websocket": URLRouter(websocket_urlpatterns)}
)
