"""The bench's URLconf (bench.settings only, never the project's): the project's URLs plus the
yardstick bench/load.py measures every endpoint against: a bare Django view that runs
`SELECT 1`. It is mounted under /api/v1/ so that it passes through exactly the middleware an API
request passes through, on the same (persistent or pooled) database connection."""

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path

from config import urls as project_urls

YARDSTICK = "/api/v1/bench/select-1/"


def select_one(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    return HttpResponse(f'{{"one": {one}}}', content_type="application/json")


# First: the project's catch-all for unknown /api/ paths would answer 404 otherwise.
urlpatterns = [path(YARDSTICK.lstrip("/"), select_one), *project_urls.urlpatterns]

handler404 = project_urls.handler404
handler500 = project_urls.handler500
