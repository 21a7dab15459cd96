"""The official Python `kubernetes` client against the real logbook binary: list and watch
with resourceVersions, paging, selectors, optimistic concurrency, and watches that resume
across a SIGKILL of the server."""
import time
import uuid

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

NS = "default"


def cm(name, labels=None, data=None):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        data=data or {"k": "v"},
    )


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def watch_events(core, rv, count, label_selector=None, timeout=20):
    """The first `count` events of a configmap watch from `rv` (fails on fewer)."""
    w = watch.Watch()
    out = []
    kwargs = {"namespace": NS, "resource_version": rv, "timeout_seconds": timeout}
    if label_selector:
        kwargs["label_selector"] = label_selector
    for ev in w.stream(core.list_namespaced_config_map, **kwargs):
        out.append((ev["type"], ev["object"].metadata.name, ev["object"].metadata.resource_version))
        if len(out) == count:
            w.stop()
            break
    assert len(out) == count, f"expected {count} events from rv {rv}, got {out}"
    return out


def test_list_then_watch_from_the_list_resource_version_sees_only_later_changes(core):
    run = unique("lw")
    for i in range(3):
        core.create_namespaced_config_map(NS, cm(f"{run}-{i}", {"run": run}))
    listed = core.list_namespaced_config_map(NS, label_selector=f"run={run}")
    assert sorted(i.metadata.name for i in listed.items) == [f"{run}-{i}" for i in range(3)]
    rv = listed.metadata.resource_version
    core.create_namespaced_config_map(NS, cm(f"{run}-3", {"run": run}))
    core.patch_namespaced_config_map(f"{run}-0", NS, {"data": {"k": "changed"}})
    core.delete_namespaced_config_map(f"{run}-1", NS)
    events = watch_events(core, rv, 3, label_selector=f"run={run}")
    assert [(t, n) for t, n, _ in events] == [
        ("ADDED", f"{run}-3"),
        ("MODIFIED", f"{run}-0"),
        ("DELETED", f"{run}-1"),
    ]
    rvs = [int(r) for _, _, r in events]
    assert rvs == sorted(rvs) and int(rv) < rvs[0]


def test_paging_returns_every_item_once_at_one_resource_version(core):
    run = unique("page")
    for i in range(25):
        core.create_namespaced_config_map(NS, cm(f"{run}-{i:02d}", {"run": run}))
    names, token, rvs, pages = [], None, set(), 0
    while True:
        page = core.list_namespaced_config_map(NS, label_selector=f"run={run}", limit=10, _continue=token)
        pages += 1
        names += [i.metadata.name for i in page.items]
        rvs.add(page.metadata.resource_version)
        # A write between pages must not show up in later pages (one snapshot).
        if pages == 1:
            core.create_namespaced_config_map(NS, cm(f"{run}-late", {"run": run}))
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3
    assert names == [f"{run}-{i:02d}" for i in range(25)]
    assert len(rvs) == 1


def test_remaining_item_count_is_reported_while_paging_without_selectors(server):
    core = client.CoreV1Api(server.api_client())
    ns = unique("remaining")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    for i in range(7):
        core.create_namespaced_config_map(ns, cm(f"c{i}"))
    # Every namespace also gets the cluster's kube-root-ca.crt ConfigMap (published by a
    # controller, as on any cluster): wait for it so the count holds still.
    deadline = time.time() + 20
    while not any(c.metadata.name == "kube-root-ca.crt" for c in core.list_namespaced_config_map(ns).items):
        assert time.time() < deadline, "kube-root-ca.crt was not published"
        time.sleep(0.1)
    total = len(core.list_namespaced_config_map(ns).items)
    assert total == 8
    page = core.list_namespaced_config_map(ns, limit=3)
    assert len(page.items) == 3
    assert page.metadata.remaining_item_count == total - 3
    last = core.list_namespaced_config_map(ns, limit=3, _continue=page.metadata._continue)
    last = core.list_namespaced_config_map(ns, limit=3, _continue=last.metadata._continue)
    assert len(last.items) == total - 6 and not last.metadata._continue
    assert last.metadata.remaining_item_count is None


def test_label_and_field_selectors_filter_lists(core):
    run = unique("sel")
    core.create_namespaced_config_map(NS, cm(f"{run}-a", {"run": run, "tier": "web"}))
    core.create_namespaced_config_map(NS, cm(f"{run}-b", {"run": run, "tier": "db"}))
    core.create_namespaced_config_map(NS, cm(f"{run}-c", {"run": run}))

    def names(**kw):
        return sorted(i.metadata.name for i in core.list_namespaced_config_map(NS, **kw).items)

    assert names(label_selector=f"run={run},tier in (web,db)") == [f"{run}-a", f"{run}-b"]
    assert names(label_selector=f"run={run},!tier") == [f"{run}-c"]
    assert names(label_selector=f"run={run},tier!=web") == [f"{run}-b", f"{run}-c"]
    assert names(field_selector=f"metadata.name={run}-b") == [f"{run}-b"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(NS, label_selector="run in (a")
    assert e.value.status == 400
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(NS, field_selector="spec.nothing=x")
    assert e.value.status == 400


def test_an_update_with_a_stale_resource_version_is_a_409_conflict(core):
    name = unique("stale")
    created = core.create_namespaced_config_map(NS, cm(name))
    fresh = core.read_namespaced_config_map(name, NS)
    fresh.data = {"k": "first"}
    core.replace_namespaced_config_map(name, NS, fresh)
    created.data = {"k": "stale"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map(name, NS, created)
    assert e.value.status == 409
    assert "the object has been modified" in e.value.body
    assert core.read_namespaced_config_map(name, NS).data == {"k": "first"}


def test_a_duplicate_create_is_a_409_already_exists(core):
    name = unique("dup")
    core.create_namespaced_config_map(NS, cm(name))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(NS, cm(name))
    assert e.value.status == 409 and "AlreadyExists" in e.value.body


def test_a_watch_resumed_after_sigkill_gets_every_later_event_once(server):
    core = client.CoreV1Api(server.api_client())
    run = unique("kill")
    core.create_namespaced_config_map(NS, cm(f"{run}-seen", {"run": run}))
    seen = watch_events(core, "1", 1, label_selector=f"run={run}")
    last_rv = seen[-1][2]
    # Acknowledged writes the watcher has not seen yet, then SIGKILL.
    before = [f"{run}-a{i}" for i in range(5)]
    for n in before:
        core.create_namespaced_config_map(NS, cm(n, {"run": run}))
    server.restart()
    core = client.CoreV1Api(server.api_client())
    after = [f"{run}-b{i}" for i in range(5)]
    for n in after:
        core.create_namespaced_config_map(NS, cm(n, {"run": run}))
    events = watch_events(core, last_rv, 10, label_selector=f"run={run}")
    assert [n for _, n, _ in events] == before + after
    assert all(t == "ADDED" for t, _, _ in events)
    rvs = [int(r) for _, _, r in events]
    assert rvs == sorted(set(rvs))


def test_a_watch_from_a_very_old_resource_version_replays_the_history(server):
    core = client.CoreV1Api(server.api_client())
    name = unique("hist")
    core.create_namespaced_config_map(NS, cm(name, {"hist": name}))
    for i in range(4):
        core.patch_namespaced_config_map(name, NS, {"data": {"k": str(i)}})
    core.delete_namespaced_config_map(name, NS)
    events = watch_events(core, "1", 6, label_selector=f"hist={name}")
    assert [t for t, _, _ in events] == ["ADDED"] + ["MODIFIED"] * 4 + ["DELETED"]
