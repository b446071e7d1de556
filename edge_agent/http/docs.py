"""``/docs``: Swagger UI served by the agent itself, so it works on a gateway without internet.

FastAPI's default ``/docs`` page loads Swagger UI's script and stylesheet from a CDN: on a
plant network that is a blank page. The assets come from the ``swagger-ui-bundle-v2``
package instead (Swagger UI 5: it reads the OpenAPI 3.1 that FastAPI writes; the older
``swagger-ui-bundle`` ships 4.15, which does not) and are served under ``/docs/assets/``.
ReDoc (``/redoc``, also CDN-only) is switched off.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"
router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="edge-agent API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
    )


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets (the app must be made with ``docs_url=None, redoc_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
