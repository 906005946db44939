#!/usr/bin/env python3
"""Validate pyxapi/model/data/relations.json against the Xen-API data model.

Each relation entry is ``[[class_a, field_a], [class_b, field_b]]`` in the order
xapi's datamodel lists it. For every entry this script checks that both fields
exist, prints their types, and flags entries whose types do not line up:

* one-to-many: one side is ``<other class> ref`` and the other ``<class> ref set``
* many-to-many: both sides are ``<other class> ref set``
* self: the same ``(class, field)`` on both sides, a ``<class> ref set``
  field paired with itself; xapi lists these to mark a plain stored set that
  has no inverse field (e.g. subject.roles, role.subroles)

It then lists every ``X ref set`` field with qualifier ``RO/runtime`` that no
relation covers, with any candidate ``ref`` fields pointing back at its class.

Exit status: 0 if every entry is consistent, 1 otherwise.

Usage: tools/check_relations.py [--model PATH] [--relations PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path("/work/shared/xenapi/xenapi.json")
DEFAULT_RELATIONS = ROOT / "pyxapi" / "model" / "data" / "relations.json"


def ref_target(ty: str) -> tuple[str, bool] | None:
    """Return (class, is_set) for ``C ref`` / ``C ref set`` types, else None."""
    if ty.endswith(" ref set"):
        return ty[: -len(" ref set")], True
    if ty.endswith(" ref"):
        return ty[: -len(" ref")], False
    return None


def kind_of(
    cls_a: str, fld_a: str, ty_a: str, cls_b: str, fld_b: str, ty_b: str
) -> str | None:
    """Classify a relation by its two field types; None if they do not line up."""
    ta, tb = ref_target(ty_a), ref_target(ty_b)
    if ta is None or tb is None:
        return None
    if (cls_a, fld_a) == (cls_b, fld_b):
        return "self" if ta[1] else None
    (target_a, set_a), (target_b, set_b) = ta, tb
    if target_a != cls_b or target_b != cls_a:
        return None
    if set_a and set_b:
        return "many-to-many"
    if set_a != set_b:
        return "one-to-many"
    return None  # ref <-> ref is not a relation xapi maintains


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--relations", type=Path, default=DEFAULT_RELATIONS)
    args = ap.parse_args(argv)

    model = json.loads(args.model.read_text())
    fields = {
        c["name"]: {f["name"]: f for f in c["fields"]} for c in model
    }
    relations = json.loads(args.relations.read_text())

    bad = 0
    covered: set[tuple[str, str]] = set()
    print(f"{len(relations)} relations in {args.relations}")
    for (ca, fa), (cb, fb) in relations:
        covered.update({(ca, fa), (cb, fb)})
        missing = [
            f"{c}.{f}" for c, f in ((ca, fa), (cb, fb))
            if f not in fields.get(c, {})
        ]
        if missing:
            bad += 1
            print(f"ABSENT   {ca}.{fa} <-> {cb}.{fb}: missing {', '.join(missing)}")
            continue
        fa_, fb_ = fields[ca][fa], fields[cb][fb]
        kind = kind_of(ca, fa, fa_["type"], cb, fb, fb_["type"])
        tag = "ok" if kind else "MISMATCH"
        if not kind:
            bad += 1
        print(
            f"{tag:8} {ca}.{fa} [{fa_['type']}; {fa_['qualifier']}] <-> "
            f"{cb}.{fb} [{fb_['type']}; {fb_['qualifier']}]"
            + (f"  ({kind})" if kind else "")
        )

    print("\nRO/runtime 'ref set' fields not covered by any relation:")
    for cname, cfields in fields.items():
        for fname, f in cfields.items():
            t = ref_target(f["type"])
            if not t or not t[1] or f["qualifier"] != "RO/runtime":
                continue
            if (cname, fname) in covered:
                continue
            target = t[0]
            back = [
                f"{target}.{n} [{g['type']}]"
                for n, g in fields.get(target, {}).items()
                if ref_target(g["type"]) and ref_target(g["type"])[0] == cname
            ]
            print(
                f"  {cname}.{fname} [{f['type']}]; fields of {target} "
                f"referring to {cname}: {', '.join(back) or 'none'}"
            )

    print(f"\n{bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
