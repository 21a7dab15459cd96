#!/usr/bin/env python3
"""Generates schema/src/proto/generated.rs: the protobuf schema of the built-in kinds.

The table is derived from two crates already in the cargo registry, never from hand-copied
.proto files:

- k8s-pb (prost-generated Rust for Kubernetes' generated.proto files) gives every message:
  its proto package (from the module path), each field's tag, prost type and the message it
  references.
- k8s-openapi (v1_33) gives the JSON names: its Deserialize impls list the exact JSON key
  next to the Rust field (`"hostIP" => Field::Key_host_ip`), and its `Resource` impls give
  the (apiVersion, kind) of every top-level kind.

Messages are joined on (package, type name case-insensitively) and fields on the snake_case
Rust name (exactly, then ignoring underscores and case: prost writes `pod_i_ps` where
k8s-openapi writes `pod_ips`). A message-typed proto field with no JSON counterpart whose
fields all appear in the parent's JSON is an inline (`json:",inline"`) embedding, e.g.
`Probe.handler` or `Volume.volumeSource`. k8s-pb may be newer than the target version: a
field only later k8s-openapi features know is left out (kube-apiserver of the target
version skips its tag too). Anything else falls back to lowerCamelCase and is reported
(stderr and the generated header) as unconfirmed.

Usage: python3 scripts/gen-proto-schema.py [--check]
  Writes schema/src/proto/generated.rs relative to the workspace root (the parent of this
  script's directory). With --check, exits 1 if the file would change.
The crates must be unpacked in the registry: `cargo fetch` (or `cargo info k8s-pb`) does it.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections import deque
from dataclasses import dataclass, field

K8S_PB_VERSION = "0.9.0"
K8S_OPENAPI_GLOB = "k8s-openapi-0.29.*"
K8S_OPENAPI_FEATURE = "v1_33"

# The API groups whose top-level kinds (and everything they reach) get a schema.
GROUP_VERSIONS = [
    "v1",
    "apps/v1",
    "batch/v1",
    "coordination.k8s.io/v1",
    "discovery.k8s.io/v1",
    "events.k8s.io/v1",
    "networking.k8s.io/v1",
    "policy/v1",
    "rbac.authorization.k8s.io/v1",
    "scheduling.k8s.io/v1",
    "storage.k8s.io/v1",
    "autoscaling/v1",
    "autoscaling/v2",
    "certificates.k8s.io/v1",
    "node.k8s.io/v1",
    "authentication.k8s.io/v1",
    "authorization.k8s.io/v1",
]

META = "k8s.io.apimachinery.pkg.apis.meta.v1"
# Kinds apimachinery registers in every group version (metav1.AddToGroupVersion), so a
# client may send them under any of the versions above or under meta.k8s.io/v1.
META_KINDS_EVERY_VERSION = ["DeleteOptions"]
# apimachinery kinds k8s-openapi lists as resources that are kept (the rest are discovery).
META_RESOURCES = {f"{META}.Status"}

# Messages whose JSON is not an object of their fields; the decoder renders them by name.
# k8s-openapi models each as a newtype, an enum, or not at all (Duration is a plain string).
SPECIAL = {
    f"{META}.Time",
    f"{META}.MicroTime",
    f"{META}.Duration",
    f"{META}.FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
}

OUTPUT = os.path.join("schema", "src", "proto", "generated.rs")


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def registry_src_dirs() -> list[str]:
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    return sorted(glob.glob(os.path.join(cargo_home, "registry", "src", "*")))


def find_crate(pattern: str) -> str:
    hits: list[str] = []
    for d in registry_src_dirs():
        hits.extend(glob.glob(os.path.join(d, pattern)))
    if not hits:
        sys.exit(
            f"error: {pattern} is not unpacked under $CARGO_HOME/registry/src; "
            "run `cargo fetch` (or `cargo info k8s-pb`) first"
        )

    def version_key(path: str) -> list[int]:
        ver = os.path.basename(path).rsplit("-", 1)[-1]
        return [int(p) if p.isdigit() else 0 for p in ver.split(".")]

    return sorted(hits, key=version_key)[-1]


def norm(name: str) -> str:
    """Field/type name with raw-identifier prefix, underscores and case removed."""
    return name.removeprefix("r#").replace("_", "").lower()


def lower_camel(snake: str) -> str:
    parts = snake.removeprefix("r#").rstrip("_").split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


# ---------------------------------------------------------------------------------------
# k8s-pb


@dataclass
class PbField:
    tag: int
    rust: str  # snake_case, without r#
    kind: str  # string|int32|int64|bool|double|bytes|message
    label: str  # optional|repeated|map
    map_value: str = ""  # for maps: string|bytes|message
    ref: str = ""  # referenced message (full proto name) for message / map-of-message


@dataclass
class PbMessage:
    package: str
    rust_name: str
    fields: list[PbField]
    nullable_wrapper: bool  # "+protobuf.nullable=true": a Go slice type wrapped in {items}


@dataclass
class PbResource:
    api_version: str
    kind: str
    message_key: tuple[str, str]  # (package, rust name lowercase)


WRAPPERS = {
    "::core::option::Option",
    "::prost::alloc::vec::Vec",
    "::prost::alloc::boxed::Box",
    "::prost::alloc::collections::BTreeMap",
    "::prost::alloc::string::String",
}

PROST_ATTR = re.compile(r"#\[prost\((.*)\)\]")
STRUCT = re.compile(r"^pub struct (\w+) \{")
FIELD_START = re.compile(r"^\s*pub (r#)?(\w+):\s*(.*)$")


def package_of(module: list[str]) -> str:
    parts = list(module)
    # Only the repository segment used hyphens in the Go import path.
    if parts and parts[0] in ("apiextensions_apiserver", "kube_aggregator"):
        parts[0] = parts[0].replace("_", "-")
    return ".".join(["k8s.io", *parts])


def resolve_path(module: list[str], path: str) -> tuple[list[str], str]:
    segs = [s for s in path.split("::") if s]
    if segs and segs[0] == "crate":
        return segs[1:-1], segs[-1]
    here = list(module)
    while segs and segs[0] == "super":
        segs.pop(0)
        here.pop()
    return here + segs[:-1], segs[-1]


def referenced_type(module: list[str], rust_type: str) -> tuple[list[str], str]:
    paths = re.findall(r"(?:::)?[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*", rust_type)
    paths = [p for p in paths if p not in WRAPPERS and p not in ("u8", "i32", "i64")]
    if not paths:
        raise ValueError(f"no message type in {rust_type!r}")
    return resolve_path(module, paths[-1])


def parse_prost_attr(attr: str) -> tuple[str, str, str, int]:
    """Returns (kind, label, map_value, tag) from the inside of #[prost(...)]."""
    tag_m = re.search(r'tag = "(\d+)"', attr)
    if not tag_m:
        raise ValueError(f"no tag in #[prost({attr})]")
    tag = int(tag_m.group(1))
    map_m = re.match(r'btree_map = "string, (\w+)"', attr)
    if map_m:
        return "map", "map", map_m.group(1), tag
    head = attr.split(",")[0].strip()
    kind = "bytes" if head.startswith("bytes") else head
    if kind not in ("string", "int32", "int64", "bool", "double", "bytes", "message"):
        raise ValueError(f"unsupported prost type in #[prost({attr})]")
    words = {w.strip() for w in attr.split(",")}
    label = "repeated" if "repeated" in words else "optional"
    if "optional" not in words and "repeated" not in words:
        raise ValueError(f"proto2 field without optional/repeated: #[prost({attr})]")
    return kind, label, "", tag


def parse_k8s_pb(root: str) -> tuple[dict[tuple[str, str], PbMessage], list[PbResource]]:
    messages: dict[tuple[str, str], PbMessage] = {}
    resources: list[PbResource] = []
    src = os.path.join(root, "src")
    for path in sorted(glob.glob(os.path.join(src, "**", "mod.rs"), recursive=True)):
        module = os.path.relpath(os.path.dirname(path), src).split(os.sep)
        if module == ["."]:
            continue
        package = package_of(module)
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        docs: list[str] = []
        current: PbMessage | None = None
        pending_attr: str | None = None
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if current is None:
                m = STRUCT.match(line)
                if m:
                    current = PbMessage(
                        package,
                        m.group(1),
                        [],
                        any("+protobuf.nullable=true" in d for d in docs),
                    )
                elif stripped.startswith("///"):
                    docs.append(stripped)
                elif not stripped.startswith("#["):
                    docs = []
                i += 1
                continue
            if line.startswith("}"):
                key = (package, current.rust_name.lower())
                if key in messages:
                    raise ValueError(f"duplicate message {key}")
                messages[key] = current
                current, docs = None, []
                i += 1
                continue
            m = PROST_ATTR.search(stripped)
            if m:
                pending_attr = m.group(1)
                i += 1
                continue
            m = FIELD_START.match(line)
            if m and pending_attr is not None:
                rust = m.group(2)
                decl = m.group(3)
                while not decl.rstrip().endswith(",") or decl.count("<") != decl.count(">"):
                    i += 1
                    decl += " " + lines[i].strip()
                kind, label, map_value, tag = parse_prost_attr(pending_attr)
                f = PbField(tag, rust, kind, label, map_value)
                if kind == "message" or map_value == "message":
                    ref_module, ref_name = referenced_type(module, decl.rstrip(","))
                    f.ref = f"{package_of(ref_module)}\0{ref_name.lower()}"
                current.fields.append(f)
                pending_attr = None
            i += 1
        for m in re.finditer(
            r"impl crate::Resource for (\w+) \{(.*?)\n\}", "\n".join(lines), re.S
        ):
            body = m.group(2)
            av = re.search(r'API_VERSION: &\'static str = "([^"]*)"', body)
            kd = re.search(r'KIND: &\'static str = "([^"]*)"', body)
            if av and kd:
                resources.append(
                    PbResource(av.group(1), kd.group(1), (package, m.group(1).lower()))
                )
    return messages, resources


# ---------------------------------------------------------------------------------------
# k8s-openapi


@dataclass
class OaStruct:
    definition: str  # proto-style full name, e.g. k8s.io.api.core.v1.ContainerPort
    json_by_key: dict[str, str] = field(default_factory=dict)  # Key_ suffix -> JSON name
    newtype: bool = False


@dataclass
class OaResource:
    api_version: str
    kind: str
    definition: str


def parse_k8s_openapi(
    root: str, feature: str
) -> tuple[dict[tuple[str, str], OaStruct], list[OaResource]]:
    structs: dict[tuple[str, str], OaStruct] = {}
    resources: list[OaResource] = []
    base = os.path.join(root, "src", feature)
    for path in sorted(glob.glob(os.path.join(base, "**", "*.rs"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        m = re.match(r"// Generated from definition (\S+)", text)
        if not m:
            continue
        definition = m.group(1)
        if definition.startswith("io.k8s."):
            definition = "k8s.io." + definition[len("io.k8s.") :]
        package, _, name = definition.rpartition(".")
        st = OaStruct(definition)
        st.newtype = bool(
            re.search(rf"pub struct {re.escape(name)}\(", text)
            or re.search(rf"pub enum {re.escape(name)}\b", text)
        )
        for jm in re.finditer(r'"([^"]+)" => Field::Key_(\w+),', text):
            st.json_by_key[jm.group(2)] = jm.group(1)
        structs[(package, name.lower())] = st
        rm = re.search(r"impl crate::Resource for \w+ \{(.*?)\n\}", text, re.S)
        if rm:
            av = re.search(r'API_VERSION: &\'static str = "([^"]*)"', rm.group(1))
            kd = re.search(r'KIND: &\'static str = "([^"]*)"', rm.group(1))
            if av and kd:
                resources.append(OaResource(av.group(1), kd.group(1), definition))
    return structs, resources


# ---------------------------------------------------------------------------------------
# Join


@dataclass
class OutField:
    tag: int
    json: str
    kind: str  # Rust expression


@dataclass
class OutMessage:
    name: str
    fields: list[OutField]
    items_only: bool


SCALARS = {
    "string": "String",
    "int32": "Int32",
    "int64": "Int64",
    "bool": "Bool",
    "double": "Double",
    "bytes": "Bytes",
}


class Joiner:
    """Joins k8s-pb messages with k8s-openapi structs; collects what it could not confirm."""

    def __init__(self, pb, oa, oa_later):
        self.pb: dict[tuple[str, str], PbMessage] = pb
        self.oa: dict[tuple[str, str], OaStruct] = oa
        # Later k8s-openapi features: a field only they know is newer than the target
        # version, and kube-apiserver of the target version skips its tag.
        self.oa_later: list[tuple[str, dict[tuple[str, str], OaStruct]]] = oa_later
        self.unconfirmed: list[str] = []
        self.loose: list[str] = []
        self.inlined: list[str] = []
        self.newer: list[str] = []
        # Messages named by the k8s-openapi struct of the parent they are inlined in.
        self.ctx_of: dict[tuple[str, str], tuple[str, str] | None] = {}

    def full_name(self, key: tuple[str, str]) -> str:
        oa = self.oa.get(key)
        if oa is not None:
            return oa.definition
        return f"{key[0]}.{self.pb[key].rust_name}"

    def ref_key(self, ref: str) -> tuple[str, str]:
        package, lname = ref.split("\0")
        key = (package, lname)
        if key not in self.pb:
            raise ValueError(f"unresolved message reference {package}.{lname}")
        return key

    @staticmethod
    def match(oa: OaStruct, rust: str) -> tuple[str, bool] | None:
        """(JSON name, matched exactly) for a prost field name."""
        for k, j in oa.json_by_key.items():
            if k.rstrip("_") == rust:
                return j, True
        loose = [j for k, j in oa.json_by_key.items() if norm(k) == norm(rust)]
        if len(loose) == 1:
            return loose[0], False
        loose = [j for j in oa.json_by_key.values() if j.lower() == norm(rust)]
        if len(loose) == 1:
            return loose[0], False
        return None

    def source(self, key: tuple[str, str], ctx: tuple[str, str] | None) -> tuple[str, str] | None:
        """The k8s-openapi struct that names a message's JSON fields.

        Its own, or for a message k8s-openapi only knows flattened into its parent (an
        inline embedding such as EphemeralContainerCommon), the parent's.
        """
        oa = self.oa.get(key)
        if oa is not None and oa.json_by_key:
            return key
        return ctx

    def flattened_json(
        self, key: tuple[str, str], ctx: tuple[str, str] | None
    ) -> set[str] | None:
        """All JSON names a message contributes when inlined (recursively)."""
        src = self.source(key, ctx)
        if src is None:
            return None
        oa = self.oa[src]
        out: set[str] = set()
        for f in self.pb[key].fields:
            hit = self.match(oa, f.rust)
            if hit is not None:
                out.add(hit[0])
            elif f.kind == "message" and f.label == "optional":
                sub = self.flattened_json(self.ref_key(f.ref), src)
                if sub is None:
                    return None
                out |= sub
            elif self.newer_version(src, f.rust) is None:
                return None
        return out

    def newer_version(self, key: tuple[str, str], rust: str) -> str | None:
        for feature, structs in self.oa_later:
            st = structs.get(key)
            if st is not None and self.match(st, rust) is not None:
                return feature
        return None

    def message(
        self, key: tuple[str, str], ctx: tuple[str, str] | None
    ) -> tuple[OutMessage, list[tuple[tuple[str, str], tuple[str, str] | None]]]:
        """The table entry for a message and the messages its kept fields reference."""
        pb = self.pb[key]
        name = self.full_name(key)
        src = self.source(key, ctx)
        oa = self.oa[src] if src is not None else None
        parent_json = set(oa.json_by_key.values()) if oa else set()
        fields: list[OutField] = []
        refs: list[tuple[tuple[str, str], tuple[str, str] | None]] = []
        for f in sorted(pb.fields, key=lambda f: f.tag):
            json = None
            ref_key = self.ref_key(f.ref) if f.ref else None
            ref = self.full_name(ref_key) if ref_key else ""
            ref_ctx = None
            if oa is not None:
                hit = self.match(oa, f.rust)
                if hit is not None:
                    json = hit[0]
                    if not hit[1]:
                        self.loose.append(f"{name}.{f.rust} -> {json}")
            if f.label == "map":
                if f.map_value == "message":
                    kind = f'Kind::MessageMap("{ref}")'
                else:
                    kind = f"Kind::{SCALARS[f.map_value]}Map"
            elif f.kind == "message":
                if f.label == "repeated":
                    kind = f'Kind::RepeatedMessage("{ref}")'
                else:
                    kind = f'Kind::Message("{ref}")'
                    if json is None and src is not None and ref_key is not None:
                        sub = self.flattened_json(ref_key, src)
                        if sub and sub <= parent_json:
                            kind = f'Kind::Inline("{ref}")'
                            json = ""
                            ref_ctx = src
                            self.inlined.append(f"{name}.{f.rust}")
            elif f.label == "repeated":
                kind = f"Kind::Repeated(Scalar::{SCALARS[f.kind]})"
            else:
                kind = f"Kind::Scalar(Scalar::{SCALARS[f.kind]})"
            if json is None and src is not None:
                later = self.newer_version(src, f.rust)
                if later is not None:
                    self.newer.append(f"{name}.{f.rust} ({later})")
                    continue
            if json is None:
                json = lower_camel(f.rust)
                if name not in SPECIAL and not pb.nullable_wrapper:
                    self.unconfirmed.append(f"{name}.{f.rust} -> {json}")
            fields.append(OutField(f.tag, json, kind))
            if ref_key is not None:
                refs.append((ref_key, ref_ctx))
        return OutMessage(name, fields, pb.nullable_wrapper), refs

    def reachable(self, roots: list[tuple[str, str]]) -> dict[tuple[str, str], OutMessage]:
        out: dict[tuple[str, str], OutMessage] = {}
        ctx_of = self.ctx_of
        queue: deque[tuple[tuple[str, str], tuple[str, str] | None]] = deque(
            (r, None) for r in roots
        )
        while queue:
            key, ctx = queue.popleft()
            src = self.source(key, ctx)
            if key in out:
                if self.source(key, ctx_of[key]) != src:
                    raise ValueError(f"{self.full_name(key)} is inlined in differing parents")
                continue
            ctx_of[key] = ctx
            out[key], refs = self.message(key, ctx)
            queue.extend(refs)
        return out


# ---------------------------------------------------------------------------------------
# Output


def rust_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(
    pb_version: str,
    oa_version: str,
    messages: list[OutMessage],
    kinds: list[tuple[str, str, str]],
    joiner: Joiner,
) -> str:
    out: list[str] = []
    w = out.append
    w("// @generated by scripts/gen-proto-schema.py. Do not edit by hand.")
    w("//")
    w(f"// Source: k8s-pb {pb_version} (prost-generated messages: packages, tags, types) and")
    w(f"// k8s-openapi {oa_version} feature {K8S_OPENAPI_FEATURE} (JSON names, resource kinds).")
    w("// Regenerate from the workspace root: `python3 scripts/gen-proto-schema.py`")
    w("// (`--check` verifies the file is current). Groups covered:")
    line = "//  "
    for i, gv in enumerate(GROUP_VERSIONS):
        item = f" {gv}" + ("," if i + 1 < len(GROUP_VERSIONS) else ".")
        if len(line) + len(item) > 96:
            w(line)
            line = "//  "
        line += item
    w(line)
    w(f"// {len(messages)} messages, {len(kinds)} (apiVersion, kind) pairs.")
    w("//")
    if joiner.unconfirmed:
        w("// JSON names not confirmed by k8s-openapi (lowerCamelCase fallback):")
        for u in sorted(set(joiner.unconfirmed)):
            w(f"//   {u}")
    else:
        w("// Every JSON name is confirmed by k8s-openapi (no lowerCamelCase fallback).")
    if joiner.newer:
        w(f"// Left out, newer than {K8S_OPENAPI_FEATURE} (their tags are skipped, as that kube-apiserver skips them):")
        for n in sorted(set(joiner.newer)):
            w(f"//   {n}")
    w("")
    w("use super::table::{Field, Kind, Message, Scalar};")
    w("")
    w("/// Every message reachable from [`KINDS`], sorted by full proto name.")
    w("pub static MESSAGES: &[Message] = &[")
    for m in messages:
        w("    Message {")
        w(f"        name: {rust_str(m.name)},")
        if m.items_only:
            w("        items_only: true,")
        else:
            w("        items_only: false,")
        if not m.fields:
            w("        fields: &[],")
        else:
            w("        fields: &[")
            for f in m.fields:
                w(f"            Field {{ tag: {f.tag}, json: {rust_str(f.json)}, kind: {f.kind} }},")
            w("        ],")
        w("    },")
    w("];")
    w("")
    w("/// (apiVersion, kind, message) of every kind a request body may carry, sorted.")
    w("pub static KINDS: &[(&str, &str, &str)] = &[")
    for av, kd, msg in kinds:
        w(f"    ({rust_str(av)}, {rust_str(kd)}, {rust_str(msg)}),")
    w("];")
    w("")
    return "\n".join(out)


def main() -> int:
    check = "--check" in sys.argv[1:]
    workspace = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pb_root = find_crate(f"k8s-pb-{K8S_PB_VERSION}")
    oa_root = find_crate(K8S_OPENAPI_GLOB)
    oa_version = os.path.basename(oa_root).rsplit("-", 1)[-1]

    pb, pb_resources = parse_k8s_pb(pb_root)
    oa, oa_resources = parse_k8s_openapi(oa_root, K8S_OPENAPI_FEATURE)
    later_features = sorted(
        (f for f in os.listdir(os.path.join(oa_root, "src")) if re.fullmatch(r"v1_\d+", f)),
        key=lambda f: int(f.split("_")[1]),
    )
    target = int(K8S_OPENAPI_FEATURE.split("_")[1])
    oa_later = [
        (f, parse_k8s_openapi(oa_root, f)[0])
        for f in later_features
        if int(f.split("_")[1]) > target
    ]
    joiner = Joiner(pb, oa, oa_later)
    log(f"k8s-pb {K8S_PB_VERSION}: {len(pb)} messages; k8s-openapi {oa_version}: {len(oa)} definitions")

    def key_of(definition: str) -> tuple[str, str]:
        package, _, name = definition.rpartition(".")
        key = (package, name.lower())
        if key not in pb:
            raise ValueError(f"k8s-openapi definition {definition} has no k8s-pb message")
        return key

    wanted = set(GROUP_VERSIONS)
    kinds: dict[tuple[str, str], tuple[str, str]] = {}
    for r in oa_resources:
        # apimachinery's own "v1" kinds are discovery documents a client never sends;
        # Status alone is kept.
        if r.definition.startswith("k8s.io.apimachinery.") and r.definition not in META_RESOURCES:
            continue
        if r.api_version in wanted:
            kinds[(r.api_version, r.kind)] = key_of(r.definition)
    # Cross-check against k8s-pb's own Resource impls: same kinds, same messages.
    for r in pb_resources:
        if r.api_version in wanted and (r.api_version, r.kind) in kinds:
            if kinds[(r.api_version, r.kind)] != r.message_key:
                raise ValueError(f"k8s-pb and k8s-openapi disagree on {r.api_version} {r.kind}")
    for kd in META_KINDS_EVERY_VERSION:
        for av in [*GROUP_VERSIONS, "meta.k8s.io/v1"]:
            kinds[(av, kd)] = (META, kd.lower())

    roots = sorted(set(kinds.values()))
    table = joiner.reachable(roots)
    keys = sorted(table)
    messages = sorted(table.values(), key=lambda m: m.name)

    # A message k8s-openapi models as a non-object must be one the decoder renders by name.
    for k in keys:
        name = joiner.full_name(k)
        oa_st = oa.get(k)
        odd = oa_st is None or oa_st.newtype
        named_by_parent = joiner.ctx_of.get(k) is not None
        if odd and name not in SPECIAL and not pb[k].nullable_wrapper and not named_by_parent:
            raise ValueError(f"{name} has no JSON object form in k8s-openapi and no special rendering")
    names = [m.name for m in messages]
    if len(set(names)) != len(names):
        raise ValueError("duplicate message names")

    kind_rows = sorted((av, kd, joiner.full_name(k)) for (av, kd), k in kinds.items())
    text = render(K8S_PB_VERSION, oa_version, messages, kind_rows, joiner)

    log(f"{len(messages)} messages, {len(kind_rows)} (apiVersion, kind) pairs")
    log(f"{len(joiner.inlined)} inline embeddings: " + ", ".join(sorted(joiner.inlined)))
    log(
        f"{len(joiner.loose)} names matched ignoring underscores/case (confirmed): "
        + ", ".join(sorted(joiner.loose))
    )
    log(
        f"{len(joiner.newer)} fields newer than {K8S_OPENAPI_FEATURE} left out (their tags are "
        "skipped, as kube-apiserver of that version does): " + ", ".join(sorted(joiner.newer))
    )
    if joiner.unconfirmed:
        log(f"{len(joiner.unconfirmed)} JSON names NOT confirmed by k8s-openapi (fallback):")
        for u in sorted(set(joiner.unconfirmed)):
            log(f"  {u}")

    path = os.path.join(workspace, OUTPUT)
    old = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
    if check:
        if old != text:
            log(f"{OUTPUT} is stale; run scripts/gen-proto-schema.py")
            return 1
        return 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    log(f"wrote {OUTPUT} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
