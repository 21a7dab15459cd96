"""kopf, a real operator framework, unmodified against Logbook: a CRD, an operator that
handles create (its return value lands in status), update (a status patch), delete (kopf's
own finalizer, released after the handler ran)."""
import os
import subprocess
import sys
import time

from kubernetes import client

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "crontabs.stable.example.com"},
    "spec": {
        "group": "stable.example.com",
        "scope": "Namespaced",
        "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}

OPERATOR_TIMEOUT_SECONDS = 60
STEP_TIMEOUT_SECONDS = 20


def wait_for(what, check):
    deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {STEP_TIMEOUT_SECONDS} s: {what}")


def test_kopf_operator_handles_create_update_and_delete_with_its_finalizer(server):
    api = server.api_client()
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(CRD)
    wait_for("the CRD is established", lambda: any(
        c.type == "Established" and c.status == "True"
        for c in (ext.read_custom_resource_definition("crontabs.stable.example.com").status.conditions or [])))

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, KUBECONFIG=os.path.join(server.data_dir, "kubeconfig"))
    kopf = os.path.join(os.path.dirname(sys.executable), "kopf")
    op = subprocess.Popen(
        [kopf, "run", "--standalone", "--all-namespaces", os.path.join(here, "kopf_operator.py")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        objs = client.CustomObjectsApi(api)
        args = ("stable.example.com", "v1", "default", "crontabs")
        objs.create_namespaced_custom_object(*args, {
            "apiVersion": "stable.example.com/v1", "kind": "CronTab",
            "metadata": {"name": "nightly"}, "spec": {"cronSpec": "0 3 * * *", "image": "v1"}})
        got = wait_for("kopf stores the create handler's result in status", lambda: (
            objs.get_namespaced_custom_object(*args, "nightly").get("status", {}).get("created")))
        assert got == {"seen": "0 3 * * *"}
        obj = objs.get_namespaced_custom_object(*args, "nightly")
        assert "kopf.zalando.org/KopfFinalizerMarker" in obj["metadata"].get("finalizers", [])

        objs.patch_namespaced_custom_object(*args, "nightly", {"spec": {"image": "v2"}})
        wait_for("kopf's update handler patches status", lambda: (
            objs.get_namespaced_custom_object(*args, "nightly").get("status", {}).get("lastImage") == "v2"))

        objs.delete_namespaced_custom_object(*args, "nightly")

        def gone():
            try:
                objs.get_namespaced_custom_object(*args, "nightly")
                return False
            except client.exceptions.ApiException as e:
                return e.status == 404
        wait_for("kopf's delete handler runs and releases its finalizer", gone)
    finally:
        op.terminate()
        try:
            out, _ = op.communicate(timeout=OPERATOR_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            op.kill()
            out, _ = op.communicate()
    assert "DELETED-HANDLER nightly" in out, out
