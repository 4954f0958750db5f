# The locker bank's staff and maintenance commands (docs/lockers.md): rare, so their bytecode
# is loaded for a command and freed after it (LockerBank._staff) instead of living in the heap.
# The customer's path (codes, doors, set_order, open) stays in edge.apps.locker.
import time

from edge.runtime import Rejected

# the fields of a compartment record, in edge.apps.locker's order (its _O.._PH, _NF)
_O, _H, _E, _X, _B, _W, _P, _PH, _NF = range(9)


async def cmd_load_codes(b, args):
    """Several set_order at once. `replace`: each only replaces the live verifier of the same
    order (the gateway's upgrade of legacy hashes to MACs): never arms an emptied compartment,
    and the old verifier is not remembered as revoked (same code)."""
    b._check_salt(args)
    orders = args.get("orders")
    rep = args.get("replace")
    if not isinstance(orders, list) or len(orders) > len(b.ids):
        raise Rejected("bad-args")
    done, refused = [], []
    for e in orders:
        try:
            old = None
            if rep:
                if not isinstance(e, dict):
                    raise Rejected("bad-args")
                s = b.c[b._arg_c(e)]
                old = s[_H]
                if not old or s[_O] != e.get("order"):
                    raise Rejected("not-live")
                s[_H] = None  # replaced, not revoked: the same code
            try:
                done.append(b.ids[b._set_order(e)])
            except Rejected:
                if old:
                    s[_H] = old
                raise
        except Rejected as r:
            refused.append([e.get("compartment") if isinstance(e, dict) else None, r.reason])
    b._save()
    return {"set": done, "refused": refused}


async def cmd_revoke(b, args):
    i = b._arg_c(args)
    s = b.c[i]
    order = args.get("order")
    if not s[_O]:
        raise Rejected("empty")
    if order is not None and order != s[_O]:
        raise Rejected("wrong-order")
    if s[_P] or s[_W] == "pickup":
        raise Rejected("busy")
    if s[_H]:
        b._remember(s[_H], i, "r")
    s[_H] = s[_E] = None
    if args.get("forget"):  # the gateway knows the compartment is empty
        b._clear_order(s)
    b._save()
    return b._reply(i)


async def cmd_open_all(b, args):
    if args.get("reason", "service") != "service":
        raise Rejected("bad-args")
    opened, jammed, skipped = [], [], []
    for i in range(len(b.ids)):  # strictly one after the other
        try:
            a = await b._unlock(i, "service")
        except Rejected:
            skipped.append(b.ids[i])
            continue
        (opened if a else jammed).append(b.ids[i])
    return {"opened": opened, "jammed": jammed, "skipped": skipped}


async def cmd_set_out_of_order(b, args):
    i = b._arg_c(args)
    on = args.get("on", True)
    s = b.c[i]
    if on and s[_O] and not args.get("force"):
        raise Rejected("occupied")
    was = b._idle()
    s[_X] = 1 if on else 0
    b._save()
    if b._idle() != was:  # the whole bank rests (or serves again): say so
        b._show(b._idle())
    return b._reply(i)


async def cmd_clear(b, args):
    i = b._arg_c(args)
    s = b.c[i]
    if not s[_B]:
        raise Rejected("not-blocked")
    if s[_W] or b.is_open[i]:
        raise Rejected("door-open")
    was = b._idle()
    s[_B] = None
    b._save()
    if b._idle() != was:
        b._show(b._idle())
    return b._reply(i)


async def cmd_status(b, args):
    comps = []
    for i in range(len(b.ids)):
        comps.append([b.ids[i], b.size[i], b._state(i), b.is_open[i], b._occ(i)])
    left = time.ticks_diff(b.lk_until, time.ticks_ms()) // 1000 if b._locked() else 0
    return {"compartments": comps, "keypad_locked_s": left, "salt_id": b.salt_id, "key_id": b.key_id}

