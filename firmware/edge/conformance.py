# The conformance test hook (docs/protocol.md "Conformance"): the `conformance` command, used
# by tools/conformance to make the device produce events and cut its link. Imported only when
# the config says "conformance": true (edge/config.py refuses that in a config with broker
# credentials, i.e. every provisioned one), so a production build never loads it. It emits
# synthetic `conformance.test` events and drops the link as a Wi-Fi loss would; it never
# touches an output.
import asyncio

from edge.runtime import Rejected

MAX_EMIT = 50


def install(rt):
    async def command(args):
        action = args.get("action")
        if action == "emit":
            n = args.get("n", 1)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= MAX_EMIT:
                raise Rejected("bad-args")
            for i in range(n):
                rt.emit("conformance.test", {"i": i})
            return {"n": n}
        if action == "drop_link":
            asyncio.create_task(_drop(rt.client))
            return {}
        raise Rejected("bad-args")

    rt.app.commands["conformance"] = command
    rt.app.caps = rt.app.caps + ["conformance"]


async def _drop(client):
    await asyncio.sleep_ms(300)  # let the `done` reply go out first
    client._lost()  # no DISCONNECT: the broker publishes the will; the link reconnects as usual
