"""The endless aisle (docs/endless-aisle.md): from the kiosk or the mirror, a customer asks for a
product or a size that is not on the floor. From this store's stockroom the tube brings it to the
station nearest the screen (the fitting rooms' size-by-tube dispatcher, reused); from elsewhere
it becomes an order for the order system (webhook `aisle.ordered`, `GET /aisle/orders`) and a
locker of this store is reserved (the locker flow); the pickup code reaches the customer through
an outbox (simulated SMS/e-mail, a delivery log, retries with backoff, never the code in clear).

A tier, not a device kind (it has no device): it uses the tube's, the lockers' and the fitting
rooms' services, which `gateway/app.py` hands it; no kind imports it.

    core.py     the rules (route, contact, masking, message, backoff): no I/O
    service.py  AisleService: requests, the outbox and its worker
    api.py      the routes: POST /aisle/requests, GET /aisle/requests/{id}, /aisle/orders, /aisle/outbox
"""
from __future__ import annotations

from gateway.storage.retention import Rule

#: the customer role's one scope: ask, and follow what was asked. No `read`, so no code anywhere.
SCOPES = ("aisle",)
ROLES: dict[str, tuple[str, ...]] = {"customer": ("aisle",)}

#: Rows of gateway.http.auth.POLICY for the aisle's routes (method, path pattern, scopes).
AUTH: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("POST", "/aisle/requests", ("aisle",)),     # a customer asks (kiosk, mirror, customer role)
    ("GET", "/aisle/requests", ("aisle",)),      # ... and follows it (no code, contact masked)
    ("GET", "/aisle/orders", ("lockers",)),      # the order system polls the orders
    ("GET", "/aisle/outbox", ("operations",)),   # staff: messages and their delivery log
)

#: Retention of the aisle's tables ([retention] aisle_days, docs/endless-aisle.md "Storage"),
#: handed to gateway/storage/retention.py by gateway/app.py; a child before its parent (the
#: foreign keys: a delivery -> its message -> its request):
#: * a delivery attempt `aisle_days` after it was made, once its message is final;
#: * a message `aisle_days` after it was queued, once final and without attempts left;
#: * a request `aisle_days` after its last change, never an order that is still open (the
#:   locker flow follows it) nor one whose message is still there.
RETENTION: tuple[Rule, ...] = (
    Rule("aisle_deliveries", "retention_aisle_days", "t",
         "t < ? AND EXISTS (SELECT 1 FROM aisle_outbox o WHERE o.id = aisle_deliveries.message "
         "AND o.state != 'pending')"),
    Rule("aisle_outbox", "retention_aisle_days", "created",
         "created < ? AND state != 'pending' AND NOT EXISTS (SELECT 1 FROM aisle_deliveries d "
         "WHERE d.message = aisle_outbox.id)"),
    Rule("aisle_requests", "retention_aisle_days", "created",
         "updated < ? AND NOT (route = 'order' AND state = 'open') AND NOT EXISTS (SELECT 1 "
         "FROM aisle_outbox o WHERE o.request = aisle_requests.id)"),
)
