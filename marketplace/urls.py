from django.urls import path

from marketplace import views

urlpatterns = [
    path("", views.order_book, name="home"),
    path("offers/new/", views.offer_new, name="offer_new"),
    path("offers/<int:offer_id>/edit/", views.offer_edit, name="offer_edit"),
    path("offers/<int:offer_id>/pause/", views.offer_pause, name="offer_pause"),
    path("offers/<int:offer_id>/resume/", views.offer_resume, name="offer_resume"),
    path("offers/<int:offer_id>/delete/", views.offer_delete, name="offer_delete"),
]
