"""HTTP API of the locker banks (docs/lockers.md): the order system's and staff's operations.

Every operation checks the compartment's state and answers a refusal with
`{"detail", "reason"}` (409, or 404/422 for unknown/bad input); every state change is a
`locker` item on the stream; every operation that changes something takes an
`idempotency_key`: a retry with the same key returns the first outcome, never a second change
or actuation. Operations the bank must carry out (open, out of order, clear) answer 200 when the
bank did it, 409 with the bank's reason when it refused (`door-open`, `jammed`...), 202 with
`Location: /commands/<id>` while the bank has not answered (offline: the command waits).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.devices.commands import CommandRejected, IdempotencyConflict, UnknownDevice
from gateway.kinds.locker_bank.core import Reason, Refused
from gateway.kinds.locker_bank.service import LockersService, UnknownBank

KEY_PATTERN = r"^[A-Za-z0-9._:@/+=-]+$"

# --- models (the OpenAPI spec shows them with their examples) --------------------------------


class LockerOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"order": "ord-1042", "size": "M"}]})
    order: str = Field(min_length=1, max_length=64, pattern=KEY_PATTERN,
                       description="the order system's order id", examples=["ord-1042"])
    size: str = Field(description="parcel size: S, M or L", examples=["M"])


class OperationIn(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"idempotency_key": "staff-7-20261123-0912"}]})
    idempotency_key: str = Field(min_length=1, max_length=120, pattern=KEY_PATTERN,
                                 description="the caller's key: a retry with the same key returns the "
                                             "first outcome, never a second change")


class OutOfOrderIn(OperationIn):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"on": True, "force": False, "idempotency_key": "staff-7-ooo-3"}]})
    on: bool = Field(default=True, description="true: out of order; false: back in service")
    force: bool = Field(default=False, description="also when an order is inside (its customer "
                                                   "cannot collect until it is back in service)")


class ErrorOut(BaseModel):
    detail: str = Field(examples=["bank-full: all 4 fitting compartments are taken"])
    reason: str | None = Field(default=None, examples=["bank-full"],
                               description="the rule that said no (docs/lockers.md)")


_ORDER_EXAMPLE: dict[str, Any] = {
    "order": "ord-1042", "size": "M", "compartment": 2, "state": "assigned",
    "assigned_at": 1795000000.0, "reserve_until": 1795014400.0, "ready_at": None,
    "pickup_until": None, "code_used_at": None, "needs_code": False, "closed_at": None}


class OrderOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_ORDER_EXAMPLE]})
    order: str
    size: str = Field(description="S, M or L")
    compartment: int
    state: str = Field(description="assigned, ready, collected, expired, returned, cancelled")
    assigned_at: float
    reserve_until: float
    ready_at: float | None = None
    pickup_until: float | None = Field(default=None, description="the code works until then (unix s)")
    code_used_at: float | None = None
    needs_code: bool = Field(default=False, description="the code was spent without a pickup: reissue")
    closed_at: float | None = None


class CodeSyncOut(BaseModel):
    command: str
    status: str = Field(description="queued, sent, accepted, done, rejected, failed, expired")
    reason: str | None = None


class OrderViewOut(OrderOut):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "order": "ord-1042", "size": "M", "compartment": 2, "state": "ready",
        "assigned_at": 1795000000.0, "reserve_until": 1795014400.0, "ready_at": 1795003600.0,
        "pickup_until": 1795262800.0, "code_used_at": None, "needs_code": False, "closed_at": None,
        "code_sync": {"command": "c-5f2a9e01b7c4d3e2", "status": "done", "reason": None}}]})
    code_sync: CodeSyncOut | None = Field(default=None, description="the set_order that puts the code on the bank")


class CompartmentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": 3, "size": "L", "state": "out_of_order", "order": None, "blocked": None}]})
    id: int
    size: str
    state: str = Field(description="free, reserved, loaded, collecting, expired, out_of_order, blocked")
    order: str | None = None
    blocked: str | None = Field(default=None, description="forced or jammed")


class BankOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "bank": "lk-1", "keypad_locked_until": None, "keypad_failures": 1,
        "compartments": [{"id": 1, "size": "S", "state": "free", "order": None, "blocked": None},
                         {"id": 2, "size": "M", "state": "loaded", "order": "ord-1042", "blocked": None}],
        "orders": [_ORDER_EXAMPLE]}]})
    bank: str
    compartments: list[CompartmentOut]
    orders: list[OrderOut]
    keypad_locked_until: float | None = Field(
        default=None, description="while the keypad is locked after wrong codes: when it unlocks (unix s)")
    keypad_failures: int = Field(default=0, description="wrong codes in the lockout window (counted by the bank)")


class CodeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "order": "ord-1042", "compartment": 2, "state": "ready", "expires_at": 1795262800.0,
        "ready_id": "9c1f0e7a2b3d4c5e", "code": "482913"}]})
    order: str
    compartment: int
    state: str
    expires_at: float
    ready_id: str
    code: str | None = Field(description="the new pickup code, shown while the gateway holds it in memory "
                                         "(10 min); null on a later retry: reissue with a new key")


class DeviceOpOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "bank": "lk-1", "compartment": 3, "order": None,
        "command": {"id": "c-0a1b2c3d4e5f6789", "device": "lk-1", "name": "open",
                    "args": {"compartment": 3, "reason": "service"}, "status": "done",
                    "result": {"compartment": 3, "attempts": 1}, "reason": None, "final": True},
        "state": None}]})
    bank: str
    compartment: int | None = None
    order: str | None = None
    command: dict[str, Any] = Field(description="the device command (GET /commands/{id})")
    state: CompartmentOut | None = Field(default=None, description="the compartment after the change")


class DeviceOpRefusedOut(DeviceOpOut):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "bank": "lk-1", "compartment": 3, "order": None, "state": None,
        "command": {"id": "c-77e0c1d2a3b4f5e6", "device": "lk-1", "name": "clear",
                    "args": {"compartment": 3}, "status": "rejected", "result": None,
                    "reason": "door-open", "final": True},
        "detail": "the bank did not do compartment 3: rejected (door-open)", "reason": "door-open"}]})
    detail: str
    reason: str | None = Field(examples=["door-open"])


_ERRORS: dict[int | str, dict[str, Any]] = {
           404: {"model": ErrorOut, "description": "unknown bank, order or compartment"},
           409: {"model": ErrorOut, "description": "the state does not allow it (`reason`)"},
           422: {"model": ErrorOut, "description": "bad input (`reason`: bad-size, no-size...)"}}
_DEVICE: dict[int | str, dict[str, Any]] = {200: {"model": DeviceOpOut, "description": "the bank did it"},
           202: {"model": DeviceOpOut, "description": "the bank has not answered yet (offline?): "
                                                      "follow `Location`"},
           404: _ERRORS[404],
           409: {"model": DeviceOpRefusedOut, "description": "refused by the gateway or the bank (`reason`)"}}

# refusal reason -> HTTP status (the body's `reason` says which rule said no)
_REFUSAL_STATUS = {Reason.NO_SIZE: 422, Reason.BAD_SIZE: 422, Reason.UNKNOWN_ORDER: 404,
                   Reason.NO_COMPARTMENT: 404}


def _refused(exc: Refused) -> JSONResponse:
    return JSONResponse(status_code=_REFUSAL_STATUS.get(exc.reason, 409),
                        content={"detail": str(exc), "reason": exc.reason})


def _bank_404(bank: str) -> HTTPException:
    return HTTPException(404, f"unknown locker bank {bank!r}: a locker-bank device appears "
                              "here after its first birth (GET /devices)")


async def _call(bank: str, coro) -> Any:
    """Await a service call, mapping its errors to HTTP answers (a JSONResponse is returned
    as is by the caller)."""
    try:
        return await coro
    except (UnknownBank, UnknownDevice):
        raise _bank_404(bank) from None
    except Refused as exc:
        return _refused(exc)
    except IdempotencyConflict as exc:
        return JSONResponse(status_code=409, content={"detail": str(exc), "reason": "idempotency-conflict"})
    except CommandRejected as exc:
        return JSONResponse(status_code=422, content={"detail": str(exc), "reason": "bad-request"})


def _device_answer(content: dict[str, Any], cmd: dict[str, Any]) -> JSONResponse:
    """200 done, 409 refused or failed (with the bank's reason), 202 not answered yet."""
    content = {**content, "command": cmd}
    if cmd["status"] == "done":
        return JSONResponse(status_code=200, content=content)
    if cmd["final"]:
        what = f"compartment {content['compartment']}" if content.get("compartment") else "it"
        return JSONResponse(status_code=409, content={
            **content, "reason": cmd["reason"] or cmd["status"],
            "detail": f"the bank did not do {what}: {cmd['status']} ({cmd['reason']})"})
    return JSONResponse(status_code=202, content=content, headers={"Location": f"/commands/{cmd['id']}"})


def router(lockers: LockersService) -> APIRouter:
    r = APIRouter()

    @r.post("/lockers/{bank}/orders", status_code=201, tags=["lockers"],
              responses={201: {"model": OrderOut, "description": "compartment reserved (or the "
                                                                "existing reservation of this order)"},
                         404: _ERRORS[404],
                         409: {"model": ErrorOut, "description": "`bank-full` or `duplicate-order`"},
                         422: {"model": ErrorOut, "description": "`no-size` or `bad-size`"}})
    async def locker_assign(bank: str, body: LockerOrderIn) -> JSONResponse:
        """Order system: reserve the smallest free compartment that fits the order
        (`order.assigned` on the stream). Idempotent by order id: the same order again
        returns its reservation."""
        o = await _call(bank, lockers.assign(bank, body.order, body.size))
        return o if isinstance(o, JSONResponse) else JSONResponse(status_code=201, content=o)

    @r.post("/lockers/{bank}/orders/{order}/load", tags=["lockers"], responses=_DEVICE)
    async def locker_load(bank: str, order: str) -> JSONResponse:
        """Staff: open the order's reserved compartment for loading (device `open reason=load`).
        When the door closes with the parcel inside, the gateway draws the pickup code, sends
        it (hashed) to the bank and emits `order.ready` on the stream (with the plain code
        for `lockers`/`admin` subscribers only).
        Idempotent per loading attempt (a `load.empty` starts a new one)."""
        out = await _call(bank, lockers.open_for_load(bank, order))
        if isinstance(out, JSONResponse):
            return out
        cid, cmd = out
        return _device_answer({"bank": bank, "order": order, "compartment": cid}, cmd)

    @r.post("/lockers/{bank}/orders/{order}/cancel", tags=["lockers"],
              responses={200: {"model": OrderOut, "description": "cancelled (`order.cancelled`)"}, **_ERRORS})
    async def locker_cancel(bank: str, order: str, body: OperationIn) -> JSONResponse:
        """Order system: cancel an order that was never loaded; its compartment is free again.
        A loaded order is refused (`order-state`): staff retrieve it."""
        out = await _call(bank, lockers.cancel(bank, order, body.idempotency_key))
        return out if isinstance(out, JSONResponse) else JSONResponse(out)

    @r.post("/lockers/{bank}/orders/{order}/reissue", tags=["lockers"],
              responses={200: {"model": CodeOut, "description": "a new code (`order.code` on the stream)"},
                         **_ERRORS})
    async def locker_reissue(bank: str, order: str, body: OperationIn) -> JSONResponse:
        """Order system: a new pickup code for a ready order (lost, or spent without a pickup).
        The old code stops working on the bank (`set_order` replaces it); the pickup window
        restarts."""
        out = await _call(bank, lockers.reissue(bank, order, body.idempotency_key))
        return out if isinstance(out, JSONResponse) else JSONResponse(lockers.render(out))

    @r.post("/lockers/{bank}/orders/{order}/retrieve", tags=["lockers"], responses=_DEVICE)
    async def locker_retrieve(bank: str, order: str, body: OperationIn) -> JSONResponse:
        """Staff: open a ready or expired order's compartment to take the parcel back; the
        order becomes `returned` when the door closes with the compartment empty."""
        out = await _call(bank, lockers.retrieve(bank, order, body.idempotency_key))
        if isinstance(out, JSONResponse):
            return out
        cid, cmd = out
        return _device_answer({"bank": bank, "order": order, "compartment": cid}, cmd)

    @r.post("/lockers/{bank}/compartments/{compartment}/open", tags=["lockers"], responses=_DEVICE)
    async def locker_open(bank: str, compartment: int, body: OperationIn) -> JSONResponse:
        """Staff: open one compartment for service (any state; refused while its door is
        open or unlocking: `door-open`, `busy`)."""
        cmd = await _call(bank, lockers.open_one(bank, compartment, body.idempotency_key))
        if isinstance(cmd, JSONResponse):
            return cmd
        return _device_answer({"bank": bank, "compartment": compartment}, cmd)

    @r.post("/lockers/{bank}/open-all", tags=["lockers"], responses=_DEVICE)
    async def locker_open_all(bank: str, body: OperationIn) -> JSONResponse:
        """Staff: open every door for service, one after the other; the result lists
        `opened`, `jammed` and `skipped` (door already open or busy)."""
        cmd = await _call(bank, lockers.open_all(bank, body.idempotency_key))
        if isinstance(cmd, JSONResponse):
            return cmd
        return _device_answer({"bank": bank}, cmd)

    async def _staff_state_op(bank: str, compartment: int, coro) -> JSONResponse:
        out = await _call(bank, coro)
        if isinstance(out, JSONResponse):
            return out
        cmd, state = out
        return _device_answer({"bank": bank, "compartment": compartment, "state": state}, cmd)

    @r.post("/lockers/{bank}/compartments/{compartment}/out-of-order", tags=["lockers"],
              responses=_DEVICE)
    async def locker_out_of_order(bank: str, compartment: int, body: OutOfOrderIn) -> JSONResponse:
        """Staff: mark a compartment out of order (`on: true`) or back in service
        (`on: false`). Refused `occupied` when an order is inside, unless `force`."""
        return await _staff_state_op(bank, compartment, lockers.set_out_of_order(
            bank, compartment, body.on, body.force, body.idempotency_key))

    @r.post("/lockers/{bank}/compartments/{compartment}/clear", tags=["lockers"], responses=_DEVICE)
    async def locker_clear(bank: str, compartment: int, body: OperationIn) -> JSONResponse:
        """Staff: release a blocked compartment (forced door, jammed lock) after checking it,
        with its door shut (`door-open` otherwise; `not-blocked` if it is not blocked)."""
        return await _staff_state_op(bank, compartment, lockers.clear(bank, compartment, body.idempotency_key))

    @r.get("/lockers/{bank}", tags=["lockers"], response_model=BankOut, responses={404: _ERRORS[404]})
    async def locker_bank(bank: str) -> dict[str, Any]:
        """Compartments (`free`/`reserved`/`loaded`/`collecting`/`expired`/`out_of_order`/
        `blocked`) and orders (never a code)."""
        try:
            return lockers.view(bank)
        except UnknownBank:
            raise _bank_404(bank) from None

    @r.get("/lockers/{bank}/orders/{order}", tags=["lockers"],
             responses={200: {"model": OrderViewOut}, 404: _ERRORS[404]})
    async def locker_order(bank: str, order: str) -> JSONResponse:
        """One order; `code_sync` is the `set_order` command that puts its code on the bank."""
        out = await _call(bank, lockers.order_view(bank, order))
        return out if isinstance(out, JSONResponse) else JSONResponse(out)

    return r
