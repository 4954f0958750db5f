# Over-the-air updates: the trial of a new set (docs/ota.md). Loaded only by a firmware on
# trial, so a download never pays heap for it: confirm once online and the self-test passed.
import asyncio

TRIAL_MS = 300000     # a trial not confirmed by then reboots (main.py counts the boots)


async def confirm_when_ready(ota):
    rt = ota.rt
    t0 = rt.uptime_ms()
    while True:
        if rt.client.is_connected() and rt.uptime_ms() - t0 > 2000:
            why = self_test(rt)
            if why is None:
                break
            rt.log("ota: self-test:", why)
        if rt.uptime_ms() - t0 > TRIAL_MS:
            rt.log("ota: not confirmed in time: rebooting")
            rt.hal.reset()
        await asyncio.sleep_ms(500)
    st = ota.st
    prev = st.get("cur")
    st["cur"] = ota.running
    st["try"] = None
    st["n"] = 0
    ota.save()  # the confirmation is this one rename
    rt.emit("ota.installed", {"version": rt.fw_version, "previous": ota.slot_version(prev) if prev else None})
    rt.log("ota: confirmed", rt.fw_version)


def self_test(rt):
    """None when the update may stay: the app runs (its heartbeat moved since boot), the
    journal reads back, and the app's own `self_test()` (reader answers...) passed."""
    if rt._alive == rt._boot_alive:
        return "app not started"
    try:
        rt.journal.entries(rt.journal.first - 1, 1)
    except Exception as e:
        return "journal: %r" % e
    test = getattr(rt.app, "self_test", None)
    if test:
        try:
            why = test()
        except Exception as e:
            why = repr(e)
        if why:
            return why
    return None
