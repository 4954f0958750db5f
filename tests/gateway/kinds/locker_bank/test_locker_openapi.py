"""Every locker endpoint is in the OpenAPI spec with request/response models and examples, and
every example is valid for its model."""
from __future__ import annotations

from gateway.app import Gateway, GatewayConfig
from gateway.kinds.locker_bank import api as api_lockers

EXPECTED = {
    ("post", "/lockers/{bank}/orders"), ("get", "/lockers/{bank}"),
    ("get", "/lockers/{bank}/orders/{order}"), ("post", "/lockers/{bank}/orders/{order}/load"),
    ("post", "/lockers/{bank}/orders/{order}/cancel"), ("post", "/lockers/{bank}/orders/{order}/reissue"),
    ("post", "/lockers/{bank}/orders/{order}/retrieve"),
    ("post", "/lockers/{bank}/compartments/{compartment}/open"), ("post", "/lockers/{bank}/open-all"),
    ("post", "/lockers/{bank}/compartments/{compartment}/out-of-order"),
    ("post", "/lockers/{bank}/compartments/{compartment}/clear"),
}


def _spec(tmp_path) -> dict:
    gw = Gateway(GatewayConfig(db_path=tmp_path / "gw.db"))  # not started: only its routes are read
    return gw.app.openapi()


def _component(spec: dict, schema: dict) -> tuple[str, dict]:
    ref = schema.get("$ref")
    assert ref, f"not a model: {schema}"
    name = ref.rsplit("/", 1)[-1]
    return name, spec["components"]["schemas"][name]


def test_every_locker_endpoint_has_models_and_examples(tmp_path):
    spec = _spec(tmp_path)
    ops = {(m, p): op for p, item in spec["paths"].items() if p.startswith("/lockers")
           for m, op in item.items()}
    assert set(ops) == EXPECTED
    for (method, path), op in ops.items():
        where = f"{method.upper()} {path}"
        assert op.get("description"), f"{where}: no description"
        assert "lockers" in op.get("tags", []), where
        if method == "post" and "{order}/load" not in path:
            body = op["requestBody"]["content"]["application/json"]["schema"]
            name, comp = _component(spec, body)
            assert comp.get("examples"), f"{where}: request model {name} has no example"
        ok = next(c for c in ("200", "201") if c in op["responses"])
        name, comp = _component(spec, op["responses"][ok]["content"]["application/json"]["schema"])
        assert comp.get("examples"), f"{where}: response model {name} has no example"
        assert "404" in op["responses"], f"{where}: unknown bank/order not documented"
        if method == "post":
            refused = op["responses"]["409" if "409" in op["responses"] else "422"]
            name, comp = _component(spec, refused["content"]["application/json"]["schema"])
            assert "reason" in comp["properties"], f"{where}: refusals carry no reason"


def test_every_example_is_valid_for_its_model():
    models = [v for v in vars(api_lockers).values()
              if isinstance(v, type) and hasattr(v, "model_json_schema") and v.__module__ == api_lockers.__name__]
    checked = 0
    for model in models:
        for example in model.model_json_schema().get("examples", []):
            model.model_validate(example)
            checked += 1
    assert checked >= 8, f"only {checked} examples"
