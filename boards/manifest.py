# Freeze manifest for a board build: `make BOARD=... FROZEN_MANIFEST=.../firmware/manifest.py`.
# Freezing runs the firmware from flash and saves RAM; plain-file deploy with mpremote works too.
package("edge", base_path="../firmware")
module("main.py", base_path="../firmware")
