from django.urls import path

from disputes import views

urlpatterns = [
    path("<int:dispute_id>/evidence/", views.evidence_add, name="evidence_add"),
    path("evidence/<int:evidence_id>/", views.evidence_file, name="evidence_file"),
]
