"""/docs (Swagger UI) and /redoc (ReDoc) served with no internet access.

FastAPI's own pages load their JavaScript, CSS and fonts from public CDNs, so on a machine
without internet (where ranking services usually run) they stay blank. The same assets ship
in the ``fastapi-offline`` wheel (``fastapi_offline/static``); they are mounted under
:data:`STATIC_PATH` and the two pages point there. Swagger UI's online validator badge
(``validatorUrl``) is off too: it would call validator.swagger.io.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_PATH", "REDOC_PATH", "STATIC_PATH", "SWAGGER_UI_PARAMETERS", "install_docs"]

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
STATIC_PATH = "/docs-static"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
# FastAPI's defaults plus no validator (an external call and a broken image offline).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def asset_dir() -> Path:
    """The directory of Swagger UI and ReDoc files shipped by ``fastapi-offline``."""
    directory = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    if not (directory / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"fastapi-offline has no Swagger UI assets in {directory}")
    return directory


def install_docs(app: FastAPI) -> None:
    """Add /docs, /docs/oauth2-redirect, /redoc and the static assets to ``app``, which must
    be built with ``docs_url=None, redoc_url=None`` (FastAPI's CDN pages off)."""
    app.mount(STATIC_PATH, StaticFiles(directory=asset_dir()), name="docs-static")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_PATH}/favicon.png",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_PATH}/favicon.png",
            with_google_fonts=False,
        )
