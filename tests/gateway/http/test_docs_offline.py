"""The API's documentation page works in a store without internet: `/docs` (Swagger UI) loads
its script, style and icon from the gateway itself (vendored by the `fastapi-offline`
package), never from a CDN. In headless Chromium, every request whose host is not the
gateway's (127.0.0.1) is aborted and counted: there must be none, and the page must list
the API's operations. Screenshot: var/artifacts/docs.png.

`/redoc` is off: ReDoc's bundle always loads its vendor's logo from the vendor's CDN (no
option turns that off), and /docs shows the same spec."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from gateway.http import auth
from tests.support.browser import shot

NO_AUTH = {"Authorization": ""}  # the rig's clients carry an admin token unless told otherwise
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def offline(page) -> list[str]:
    """Cut the page off from everything but the gateway; returns the list of what it tried."""
    aborted: list[str] = []

    def handle(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", handle)
    return aborted


def blank(page, aborted: list[str], what: str) -> str:
    return (f"the page asked the internet for {aborted}; it lists {page.locator(what).count()} "
            f"operations; its text: {page.inner_text('body')[:200]!r}")


def operations(gw) -> list[tuple[str, str]]:
    spec = httpx.get(gw.url + "/openapi.json", headers=NO_AUTH).json()
    return [(m.upper(), p) for p, item in spec["paths"].items() for m in item if m in METHODS]


def operation_ids(gw) -> list[str]:
    spec = httpx.get(gw.url + "/openapi.json", headers=NO_AUTH).json()
    return [o["operationId"] for item in spec["paths"].values() for m, o in item.items()
            if m in METHODS]


def test_swagger_ui_lists_the_operations_with_no_network_but_the_gateway(browser, gw):
    ops = operations(gw)
    assert len(ops) >= 30 and ("GET", "/health") in ops
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    try:
        aborted = offline(page)
        page.goto(f"{gw.url}/docs", wait_until="load")  # anonymous: /docs is public
        assert aborted == [], blank(page, aborted, ".opblock")
        blocks = page.locator(".opblock")
        health = page.locator('.opblock-get .opblock-summary-path[data-path="/health"]')
        health.wait_for(timeout=20_000)
        assert health.is_visible()
        # every operation of the spec is listed, each with its method and path
        shown = sorted(zip(page.locator(".opblock-summary-method").all_inner_texts(),
                           page.locator(".opblock-summary-path").evaluate_all(
                               "els => els.map(e => e.dataset.path)")))
        assert blocks.count() == len(ops)
        assert shown == sorted(ops)
        for method, path in (("POST", "/devices/{device}/commands"), ("GET", "/audit"),
                             ("GET", "/lockers/{bank}")):
            assert (method, path) in shown, (method, path)
        title = page.locator(".swagger-ui .info .title", has_text="Phygital Edge gateway")
        assert title.is_visible()
        assert aborted == [], f"the page asked the internet for: {aborted}"
        assert shot(page, "docs").stat().st_size > 10_000
    finally:
        page.close()


def test_documentation_assets_are_public_and_nothing_else_is_widened(gw):
    """The vendored assets are served to anyone (the /docs page is public, its assets must be
    too) and are exactly what the package ships; /redoc and the API stay as they were."""
    import fastapi_offline

    static = Path(fastapi_offline.__file__).with_name("static")
    files = sorted(p.name for p in static.iterdir() if p.is_file())
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"} <= set(files)
    for name in files:
        path = f"/docs/static/{name}"
        assert auth.required_scopes("GET", path) == ()
        r = httpx.get(gw.url + path, headers=NO_AUTH)
        assert r.status_code == 200, path
        assert r.content == (static / name).read_bytes(), path
    html = httpx.get(gw.url + "/docs", headers=NO_AUTH)
    assert html.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in html.text
    assert "https://" not in html.text and "http://" not in html.text
    assert httpx.get(gw.url + "/openapi.json", headers=NO_AUTH).status_code == 200
    admin = {"Authorization": f"Bearer {os.environ['PHYGITAL_ADMIN_TOKEN']}"}
    # the default static mount of fastapi-offline is not used, and nothing else became public
    r = httpx.get(gw.url + "/static-offline-docs/swagger-ui.css", headers=admin)
    assert r.status_code == 404
    for path in ("/redoc", "/devices", "/audit", "/docsx", "/static-offline-docs/favicon.png"):
        assert auth.required_scopes("GET", path) != (), path
    # /redoc is off (module docstring): not found even for an admin
    assert httpx.get(gw.url + "/redoc", headers=NO_AUTH).status_code == 401
    assert httpx.get(gw.url + "/redoc", headers=admin).status_code == 404
