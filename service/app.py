"""``service.app.create_app``: the import path of docs/DESIGN.md §9, kept where outside checks look.

The app itself is built in ``service.api.app``.
"""

from __future__ import annotations

from service.api.app import create_app

__all__ = ["create_app"]
