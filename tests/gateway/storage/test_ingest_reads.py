"""The ingest's batch reads and writes of the acks table (issue 18: fewer statements per
batch) give what the one-row methods give."""
from tests.support.envelopes import NOW


def test_devices_with_epoch_state_is_get_device_and_epoch_state_in_one_query(gw_store):
    for dev, epoch in (("pad-1", "e1"), ("pad-2", "e7")):
        gw_store.upsert_device(id=dev, kind="sample-pad", fw="1", caps=["blink"], cfg="0",
                               session=3, epoch=epoch, boot=1, reset=None, online=True, now=NOW)
    gw_store.set_watermark("pad-1", "e1", 5)
    gw_store.set_verified("pad-1", "e1", 4, mark=9)
    gw_store.seal_epoch("pad-1", "e1", 12, "f00d")
    gw_store.set_watermark("pad-2", "e0", 3)  # an older epoch's row only: no state for e7
    got = gw_store.devices_with_epoch_state(["pad-1", "pad-2", "pad-9"])
    assert set(got) == {"pad-1", "pad-2"}  # unknown devices are left out
    for dev in ("pad-1", "pad-2"):
        row, st = got[dev]
        assert row == gw_store.get_device(dev)
        assert st == gw_store.epoch_state(dev, row["epoch"])
    assert got["pad-1"][1] == {"upto": 5, "verified": 4, "mark": 9, "sealed": 12, "fork": "f00d"}
    assert got["pad-2"][1] is None


def test_set_acks_many_is_set_watermark_then_set_verified(gw_store):
    gw_store.set_watermark("pad-1", "e1", 8)
    gw_store.set_acks_many([("pad-1", "e1", 5), ("pad-2", "e1", 3)],  # never lowers a watermark
                           [(2, "pad-2", "e1"), (7, "pad-1", "e1")])
    assert gw_store.epoch_state("pad-1", "e1")["upto"] == 8
    assert gw_store.epoch_state("pad-1", "e1")["verified"] == 7
    assert gw_store.epoch_state("pad-2", "e1") == {"upto": 3, "verified": 2, "mark": None,
                                                   "sealed": None, "fork": None}
