"""`python -m gateway.central`: the same as `phygital central`."""
from gateway.central.consumer import main

if __name__ == "__main__":
    raise SystemExit(main())
