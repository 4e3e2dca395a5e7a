"""Errors of the management API. The exception and its renderer are pxproxy's one pair
(pxproxy/problems.py), shared with the proxy; which error gets which status is error_table.py."""

from __future__ import annotations

from typing import Any

from ..problems import Problem, render

__all__ = ["ApiError", "ambiguous", "bad_request", "not_found", "problem_response"]

# The API's historical names for the shared pair.
ApiError = Problem
problem_response = render


def bad_request(detail: str, **extra: Any) -> ApiError:
    return ApiError(400, "Bad Request", detail, **extra)


def not_found(detail: str, **extra: Any) -> ApiError:
    return ApiError(404, "Not Found", detail, **extra)


def ambiguous(detail: str, candidates: list[dict[str, Any]]) -> ApiError:
    return ApiError(409, "Ambiguous", detail, candidates=candidates)
