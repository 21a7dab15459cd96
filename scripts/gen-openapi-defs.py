#!/usr/bin/env python3
"""Writes schema/openapi/definitions.json: the Swagger 2.0 definitions of the Kubernetes
v1.33 API types Logbook serves, from which /openapi/v2 and /openapi/v3 are built.

Source: the `kubernetes-validate` wheel on PyPI (Apache-2.0), which ships the Kubernetes
OpenAPI definitions (Apache-2.0, the Kubernetes Authors) converted to JSON Schema by
openapi2jsonschema. This script converts them back to Swagger 2.0 form:
- `"type": ["string", "null"]` -> `"type": "string"` (openapi2jsonschema adds the null);
- the `enum` it adds to `apiVersion`/`kind` of top-level kinds is dropped;
- `$ref: #/$defs/X` -> `#/definitions/X`;
- IntOrString -> {type: string, format: int-or-string}, Quantity -> {type: string}, as
  kube-apiserver publishes them.
Alpha and beta groups are left out (Logbook serves stable versions only); every definition a
kept one refers to is kept.

Usage: scripts/gen-openapi-defs.py [path/to/kubernetes_validate-*.whl]
"""
import json, os, subprocess, sys, tempfile, zipfile

VERSION_DIR = "v1.33.0-local"
WHEEL = "kubernetes-validate==1.37.0"
OUT = os.path.join(os.path.dirname(__file__), "..", "schema", "openapi", "definitions.json")


def load(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(f"{VERSION_DIR}/_definitions.json"))
        return json.loads(z.read(name))["$defs"]


def fetch():
    d = tempfile.mkdtemp()
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", d, WHEEL], check=True)
    return os.path.join(d, next(f for f in os.listdir(d) if f.endswith(".whl")))


def convert(x, top_kind=False):
    if isinstance(x, list):
        return [convert(i) for i in x]
    if not isinstance(x, dict):
        return x
    out = {}
    for k, v in x.items():
        if k == "$ref" and isinstance(v, str):
            out[k] = v.replace("#/$defs/", "#/definitions/")
        elif k == "type" and isinstance(v, list):
            non_null = [t for t in v if t != "null"]
            out[k] = non_null[0] if len(non_null) == 1 else non_null
        elif k == "properties":
            props = {}
            for pk, pv in v.items():
                pv = convert(pv)
                if top_kind and pk in ("apiVersion", "kind") and isinstance(pv, dict):
                    pv.pop("enum", None)
                props[pk] = pv
            out[k] = props
        else:
            out[k] = convert(v)
    return out


def stable(name):
    pkg = name.rsplit(".", 1)[0]
    version = pkg.rsplit(".", 1)[-1]
    return "alpha" not in version and "beta" not in version


def refs(x, acc):
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "$ref" and isinstance(v, str):
                acc.add(v.rsplit("/", 1)[-1])
            else:
                refs(v, acc)
    elif isinstance(x, list):
        for i in x:
            refs(i, acc)


def main():
    wheel = sys.argv[1] if len(sys.argv) > 1 else fetch()
    src = load(wheel)
    defs = {}
    for name, d in src.items():
        defs[name] = convert(d, top_kind="x-kubernetes-group-version-kind" in d)
    defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {
        "description": "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.  This allows you to have, for example, a JSON field that can accept a name or number.",
        "type": "string",
        "format": "int-or-string",
    }
    q = src["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
        "description": q.get("description", "Quantity is a fixed-point representation of a number."),
        "type": "string",
    }
    keep = {n for n in defs if stable(n)}
    todo = list(keep)
    while todo:
        acc = set()
        refs(defs[todo.pop()], acc)
        for r in acc - keep:
            keep.add(r)
            todo.append(r)
    out = {n: defs[n] for n in sorted(keep)}
    with open(OUT, "w") as f:
        json.dump(out, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(out)} definitions to {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


main()
