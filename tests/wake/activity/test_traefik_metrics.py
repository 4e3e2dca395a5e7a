"""Reading Traefik's exposition text: requests and open connections per service."""

from __future__ import annotations

import pytest

from pxproxy.wake.activity import ServiceFigures, parse_service_figures
from pxproxy.wake.activity.traefik_metrics import service_figures

from .fakes import metrics


def test_requests_are_summed_over_every_label_but_the_service() -> None:
    figures = parse_service_figures(metrics({"wiki@http": 8, "blog@file": 3}))
    assert figures == {
        "blog@file": ServiceFigures(requests=3, open_connections=0),
        "wiki@http": ServiceFigures(requests=8, open_connections=0),
    }


def test_traefik_2_open_connections_per_service_are_read() -> None:
    text = metrics({"wiki@http": 1}, open_connections={"wiki@http": 2, "ws@http": 1})
    figures = parse_service_figures(text)
    assert figures["wiki@http"] == ServiceFigures(1, 2)
    assert figures["ws@http"] == ServiceFigures(0, 1)


def test_entrypoint_and_byte_series_are_not_mistaken_for_service_requests() -> None:
    # traefik_service_requests_bytes_total shares the prefix; the entrypoint gauge has no
    # service label.
    assert parse_service_figures(metrics({})) == {}


def test_a_bare_name_matches_the_service_under_any_provider() -> None:
    figures = parse_service_figures(metrics({"wiki@http": 4, "wiki@file": 2, "wikis@http": 9}))
    assert service_figures(figures, "wiki@http") == ServiceFigures(4, 0)
    assert service_figures(figures, "wiki") == ServiceFigures(6, 0)
    assert service_figures(figures, "missing@http") == ServiceFigures(0, 0)


def test_text_that_is_not_prometheus_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="could not convert"):
        parse_service_figures('traefik_service_requests_total{service="a@http"} many\n')
