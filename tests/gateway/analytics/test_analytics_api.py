"""Purchases store-wide and the analytics routes on a real gateway process: POST /purchases and
the old POST /fitting/purchases share one ledger (idempotent by receipt), the CSV import is all
or nothing and says which line is wrong, sizes and types are refused clearly, scopes hold, the
figures answer in JSON, CSV and SVG, and a range out of bounds is a 422 that says why."""
from __future__ import annotations

import httpx

from gateway.kinds.fitting_room import gs1
from tests.support.auth import bearer, token

H = 3_600_000
D0 = 1_795_392_000_000            # 2026-11-23 00:00 UTC
DAY = (D0 + 9 * H, D0 + 13 * H)


def gtin(body13: str) -> str:
    return body13 + str(gs1.check_digit(body13))


A, B = gtin("0950600013435"), gtin("0950600013436")


def funnel(gw, **params):
    r = httpx.get(f"{gw.url}/analytics/funnel", params={"start": DAY[0], "end": DAY[1], **params},
                  timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def post_csv(gw, body: bytes | str, ctype="text/csv", headers=None):
    return httpx.post(f"{gw.url}/purchases/import", timeout=30,
                      content=body.encode() if isinstance(body, str) else body,
                      headers={"Content-Type": ctype, **(headers or {})})


def test_purchases_store_wide_old_path_csv_import_and_refusals(gw):
    url = gw.url
    r = httpx.post(f"{url}/purchases", timeout=10, json={
        "receipt": "R-1", "at": D0 + 9 * H + 60_000, "items": [{"gtin": A, "qty": 2}]})
    assert r.status_code == 201, r.text
    assert r.json() == {"receipt": "R-1", "at": D0 + 9 * H + 60_000,
                        "lines": [{"gtin": A, "qty": 2, "sessions": []}]}
    # a POS retry, on either path, returns the receipt as recorded
    retry = httpx.post(f"{url}/fitting/purchases", timeout=10, json={
        "receipt": "R-1", "items": [{"gtin": B, "qty": 9}]})
    assert retry.status_code == 201 and retry.json() == r.json()
    old = httpx.post(f"{url}/fitting/purchases", timeout=10, json={
        "receipt": "R-2", "at": D0 + 10 * H, "items": [{"gtin": B[1:]}]})  # a GTIN-13
    assert old.status_code == 201 and old.json()["lines"][0]["gtin"] == B
    bad = httpx.post(f"{url}/purchases", timeout=10, json={"receipt": "R-3", "items": [{"gtin": "123"}]})
    assert bad.status_code == 422 and bad.json()["reason"] == "bad-gtin"
    f = funnel(gw)
    assert (f["totals"]["purchases"], f["totals"]["units"]) == (2, 3)
    assert [b["purchases"] for b in f["buckets"]] == [1, 1, 0, 0]
    # the fitting rooms still see every receipt (their attribution, GET /fitting/analytics)
    assert gw.get("/fitting/analytics")["purchases"] == 2

    # a day's receipts: R-1 is known (left as it was), R-4 has two lines
    good = ("receipt,at,gtin,qty,till\n"
            f"R-1,{D0 + 9 * H},{A},5,1\n"
            f"R-4,2026-11-23T11:30:00+01:00,{A},1,2\n"           # 10:30 UTC
            f"R-4,2026-11-23T11:30:00+01:00,{B},3,2\n"
            "\n"
            f"R-5,2026-11-23T11:45:00Z,{B},,1\n")                 # qty defaults to 1
    r = post_csv(gw, "\ufeff" + good)
    assert r.status_code == 200, r.text
    assert r.json() == {"receipts": 3, "lines": 4, "units": 10, "imported": 2,
                        "already_known": ["R-1"]}
    f = funnel(gw)
    assert (f["totals"]["purchases"], f["totals"]["units"]) == (4, 8)
    assert [b["units"] for b in f["buckets"]] == [2, 5, 1, 0]

    # malformed: nothing is imported, the answer names the line and what is wrong
    for body, line, reason, words in (
            (f"receipt,at,gtin,qty\nR-6,{D0},{A},1\nR-7,{D0},{A},0\n", 3, "bad-qty", "qty '0'"),
            (f"receipt,at,gtin,qty\nR-6,{D0},{A},1\nR-7,{D0},{A[:-1]}0,1\n", 3, "bad-gtin",
             "check digit"),
            (f"receipt,at,gtin\nR-6,2026-11-23T10:00:00,{A}\n", 2, "bad-at", "UTC offset"),
            (f"receipt,at,gtin\nR-6,{D0},{A}\nR-6,{D0 + 1},{B}\n", 3, "bad-at", "one time per receipt"),
            (f"receipt;at;gtin\nR-6;{D0};{A}\n", 1, "bad-header", "`;`"),
            (f"receipt,when,gtin\nR-6,{D0},{A}\n", 1, "bad-header", "lacks at"),
            (f"receipt,at,gtin,qty\nR-6,{D0},{A}\n", 2, "bad-line", "3 fields")):
        r = post_csv(gw, body)
        assert r.status_code == 422, (body, r.text)
        got = r.json()
        assert (got["line"], got["reason"]) == (line, reason) and words in got["detail"] \
            and f"line {line}" in got["detail"], got
    assert funnel(gw)["totals"]["purchases"] == 4          # nothing of them imported
    assert httpx.get(f"{url}/analytics/products", timeout=10, params={
        "start": D0, "end": D0 + 24 * H}).json()["count"] == 2   # A and B only
    r = post_csv(gw, "x", ctype="application/json")
    assert r.status_code == 415 and "text/csv" in r.json()["detail"]
    r = post_csv(gw, b"receipt,at,gtin\n" + b"R,1,1\n" * (2 * 1024 * 1024 // 6 + 1))
    assert r.status_code == 413, r.status_code
    r = post_csv(gw, b"receipt,at,gtin\n\xff\xfe")
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"]

    # entries from the footfall route: the funnel's first step, and the fitting rooms' figure
    assert httpx.post(f"{url}/fitting/footfall", timeout=10,
                      json={"at": D0 + 9 * H + 5, "entries": 40}).status_code == 204
    f = funnel(gw)
    assert f["totals"]["entries"] == 40 and f["purchases_per_entry"] == 0.1   # 4 / 40
    assert gw.get("/fitting/analytics")["footfall"] == 40


def test_scopes_bounds_csv_and_charts(gw):
    url = gw.url
    reader, staff = token(gw, "screen", "kiosk"), token(gw, "till", "staff")
    body = {"receipt": "R-9", "at": D0 + 9 * H, "items": [{"gtin": A}]}
    assert httpx.post(f"{url}/purchases", json=body, headers=bearer(reader), timeout=10).status_code == 403
    assert post_csv(gw, f"receipt,at,gtin\nR-9,{D0},{A}\n", headers=bearer(reader)).status_code == 403
    assert httpx.post(f"{url}/purchases", json=body, headers=bearer(staff), timeout=10).status_code == 201
    r = httpx.get(f"{url}/analytics/funnel", headers=bearer(reader), timeout=10,
                  params={"start": DAY[0], "end": DAY[1]})
    assert r.status_code == 200 and r.json()["totals"]["purchases"] == 1
    assert httpx.get(f"{url}/analytics/funnel", headers={"Authorization": ""}, timeout=10).status_code == 401

    def get(path, **params):
        return httpx.get(f"{url}{path}", params=params, timeout=10)
    for params, words in (({"start": DAY[0] + 1, "end": DAY[1]}, "start must be a whole hour"),
                          ({"start": DAY[1], "end": DAY[0]}, "must be before end"),
                          ({"start": D0, "end": D0 + 32 * 24 * H}, "at most 31"),
                          ({"start": D0, "end": D0 + 401 * 24 * H, "bucket": "day"}, "at most 400"),
                          ({"start": -H}, "greater than or equal to 0"),
                          ({"bucket": "week"}, "bucket")):
        r = get("/analytics/funnel", **params)
        assert r.status_code == 422 and words in r.json()["detail"], (params, r.text)
    assert get("/analytics/funnel", start=D0, end=D0 + 40 * 24 * H, bucket="day").status_code == 200
    assert get("/analytics/products", limit=0).status_code == 422
    assert get("/analytics/devices", start=D0, end=D0 + 500 * 24 * H).status_code == 422
    # every figure exports as CSV
    for figure, header in (("funnel", "t,entries,placements"), ("products", "product,placed"),
                           ("devices", "device,kind,online_min"), ("tube", "start,end,deliveries"),
                           ("lockers", "start,end,loaded")):
        r = get(f"/analytics/{figure}", start=DAY[0], end=DAY[1], format="csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.text.startswith(header), (figure, r.text[:80])
    assert get("/analytics/funnel", start=DAY[0], end=DAY[1], format="csv").text.splitlines()[1] \
        == f"{DAY[0]},0,0,0,0,0,1,1"
    # charts: SVG whose bars carry their values
    r = get("/analytics/charts/hourly.svg", start=DAY[0], end=DAY[1])
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.count('class="bar entries"') == 4 and 'class="point purchases" ' \
        f'data-t="{DAY[0]}" data-v="1"' in r.text
    r = get("/analytics/charts/products.svg", start=DAY[0], end=DAY[1])
    assert r.status_code == 200 and "No product was tried on." in r.text
    assert get("/analytics/charts/pie.svg").status_code == 404
    assert get("/analytics/charts/hourly.svg", start=1).status_code == 422
