"""Transport tier: MQTT (the bus and its hand-written client), the CoAP edge and its device
auth, the embedded demo broker."""
