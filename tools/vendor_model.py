"""Vendor the Xen-API data model into the package, without xapi's prose.

    python tools/vendor_model.py ../shared/xenapi

Keeps names, types, qualifiers, defaults, lifecycle states, params, results,
errors, roles and enum values; drops every description and doc string.
"""
import json
import pathlib
import sys


def lifecycle_state(item):
    return item.get("lifecycle", {}).get("state", "Published_s")


def strip_class(cls):
    return {
        "name": cls["name"],
        "state": lifecycle_state(cls),
        "fields": [
            {k: f[k] for k in ("name", "type", "qualifier", "default") if k in f}
            | {"state": lifecycle_state(f)}
            for f in cls["fields"]
        ],
        "messages": [
            {
                "name": m["name"],
                "params": [
                    {"name": p["name"], "type": p["type"], "required": p.get("required", True)}
                    for p in m["params"]
                ],
                "result": m["result"][0],
                "errors": [e["name"] for e in m.get("errors", [])],
                "roles": m.get("roles", []),
                "implicit": m.get("implicit", False),
                "state": lifecycle_state(m),
            }
            for m in cls["messages"]
        ],
        "enums": {e["name"]: [v["name"] for v in e["values"]] for e in cls["enums"]},
    }


def main(src):
    src = pathlib.Path(src)
    out = pathlib.Path(__file__).resolve().parent.parent / "pyxapi" / "model" / "data"
    out.mkdir(parents=True, exist_ok=True)
    classes = [strip_class(c) for c in json.loads((src / "xenapi.json").read_text())]
    (out / "xenapi.json").write_text(json.dumps(classes, separators=(",", ":"), sort_keys=True))
    errors = json.loads((src / "errors.json").read_text())["errors"]
    (out / "errors.json").write_text(json.dumps(errors, indent=0, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/xenapi")
