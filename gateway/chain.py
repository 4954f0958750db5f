"""`python -m gateway.chain bridge ...` (docs/chain.md): the command line kept where operators
know it; the chain itself is gateway/integrations/chain.py."""
from gateway.integrations.chain import main

if __name__ == "__main__":
    raise SystemExit(main())
