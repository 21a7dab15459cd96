#!/usr/bin/env python3
"""Builds the container images a test run needs, locally and without any registry, as
`docker save`-format tarballs that `ctr -n k8s.io images import` accepts:

  OUT/busybox.tar  docker.io/library/busybox:latest and docker.io/library/busybox:1.36
                   the host's static busybox (package busybox-static) with a symlink in /bin
                   for every applet, /etc/passwd (root, nobody), /etc/group, /tmp (1777),
                   /root, /var, /proc, /sys, /dev, empty /etc/hosts and /etc/resolv.conf;
                   Cmd ["sh"], the usual PATH.
  OUT/pause.tar    registry.k8s.io/pause:3.9
                   a pod sandbox's infra container: /pause, a static C program (gcc -static
                   -Os) that sleeps in pause(2), reaps zombies, and exits 0 on SIGTERM/SIGINT
                   (as PID 1 a process ignores every signal it has no handler for). If gcc
                   or the static libc is missing, falls back to busybox sh with traps.

Deterministic: same inputs (busybox binary, C compiler) -> byte-identical tarballs and
image digests (fixed mtimes, sorted entries, uid/gid 0, no build ids, no timestamps).

Each tarball holds manifest.json (RepoTags, Config, Layers), the image config
<sha256>.json and one uncompressed layer <sha256>/layer.tar, as `docker save` writes them;
containerd converts that to a schema 2 manifest on import.

Usage: scripts/oci-images.py OUT_DIR [--pause=c|sh]
   (--pause=sh forces the busybox fallback for the pause image)
Prints one line per image: file, names, config digest.
"""
import hashlib, io, json, os, platform, shutil, subprocess, sys, tarfile, tempfile

BUSYBOX = "/bin/busybox"
BUSYBOX_TAGS = ["docker.io/library/busybox:latest", "docker.io/library/busybox:1.36"]
PAUSE_TAGS = ["registry.k8s.io/pause:3.9"]
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A fixed, valid timestamp for every file and for the image config (Unix epoch + 1 s:
# some tools treat mtime 0 as "unset").
MTIME = 1
CREATED = "1970-01-01T00:00:01Z"
GCC_WAIT_S = 120  # upper bound for compiling pause.c

PAUSE_C = r"""
/* pause: the infra container of a pod sandbox. Runs as PID 1 of the pod's PID namespace,
 * where the kernel drops every signal without a handler: so TERM/INT get handlers that
 * exit, and CHLD one that reaps orphans re-parented to us. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_exit_signal(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(int argc, char **argv) {
    (void)argc; (void)argv;
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_exit_signal;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;
    for (;;) pause();
    return 42; /* not reached */
}
"""

# The fallback: sh as PID 1 with traps; `wait` returns as soon as a trapped signal arrives.
PAUSE_SH = ("trap 'exit 0' TERM INT; "
            "while :; do sleep 2147483647 & wait $!; done")


def go_arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}.get(m, m)


class Layer:
    """An in-memory, deterministic tar layer: add entries in any order, they are sorted."""

    def __init__(self):
        self.entries = {}  # path (no leading /) -> (TarInfo, bytes or None)

    def _info(self, path, kind, mode):
        ti = tarfile.TarInfo(path)
        ti.type, ti.mode, ti.mtime = kind, mode, MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    def dir(self, path, mode=0o755):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):  # missing parents, with the default mode
            p = "/".join(parts[:i])
            if p not in self.entries:
                self.entries[p] = (self._info(p, tarfile.DIRTYPE, 0o755), None)
        p = "/".join(parts)
        self.entries[p] = (self._info(p, tarfile.DIRTYPE, mode), None)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        if "/" in path:
            parent = path.rsplit("/", 1)[0]
            if parent not in self.entries:
                self.dir(parent)
        ti = self._info(path, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.entries[path] = (ti, data)

    def symlink(self, path, target):
        path = path.strip("/")
        ti = self._info(path, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.entries[path] = (ti, None)

    def tar_bytes(self):
        buf = io.BytesIO()
        # PAX would add non-deterministic headers for long names only; GNU is plain.
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for path in sorted(self.entries):
                ti, data = self.entries[path]
                tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def write_image(out_path, tags, layer_tar, config):
    """Writes a docker-save tarball with one layer; returns the config digest."""
    layer_hex = hashlib.sha256(layer_tar).hexdigest()
    config = dict(config)
    config["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + layer_hex]}
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": config_hex + ".json", "RepoTags": tags,
                 "Layers": [layer_hex + "/layer.tar"]}]
    repositories = {}
    for t in tags:
        repo, tag = t.rsplit(":", 1)
        repositories.setdefault(repo, {})[tag] = layer_hex

    outer = Layer()
    outer.dir(layer_hex)
    outer.file(layer_hex + "/VERSION", b"1.0")
    outer.file(layer_hex + "/json", json.dumps(
        {"id": layer_hex, "created": CREATED, "os": config["os"]}, sort_keys=True).encode())
    outer.file(layer_hex + "/layer.tar", layer_tar)
    outer.file(config_hex + ".json", config_bytes)
    outer.file("manifest.json", json.dumps(manifest, sort_keys=True).encode())
    outer.file("repositories", json.dumps(repositories, sort_keys=True).encode())
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(outer.tar_bytes())
    os.replace(tmp, out_path)
    return "sha256:" + config_hex


def base_config(cmd=None, entrypoint=None, user=None):
    cfg = {"Env": [PATH_ENV], "WorkingDir": "/"}
    if cmd is not None:
        cfg["Cmd"] = cmd
    if entrypoint is not None:
        cfg["Entrypoint"] = entrypoint
    if user is not None:
        cfg["User"] = user
    return {"architecture": go_arch(), "os": "linux", "created": CREATED, "config": cfg,
            "history": [{"created": CREATED, "created_by": "scripts/oci-images.py"}]}


def busybox_binary():
    if not os.path.isfile(BUSYBOX):
        sys.exit(f"oci-images: {BUSYBOX} missing (apt-get install busybox-static)")
    out = subprocess.run(["file", "-L", BUSYBOX], capture_output=True, text=True).stdout \
        if shutil.which("file") else ""
    if out and "statically linked" not in out and "static-pie" not in out:
        sys.exit(f"oci-images: {BUSYBOX} is not static ({out.strip()}); "
                 "install busybox-static")
    with open(BUSYBOX, "rb") as f:
        return f.read()


def busybox_layer(bb):
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    l = Layer()
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "etc", "root", "var",
              "var/log", "proc", "sys", "dev", "home", "run"]:
        l.dir(d, 0o700 if d == "root" else 0o755)
    l.dir("tmp", 0o1777)
    l.dir("var/tmp", 0o1777)
    l.file("bin/busybox", bb, 0o755)
    for a in sorted(set(applets)):
        if a != "busybox" and "/" not in a:
            l.symlink("bin/" + a, "busybox")
    # Scripts commonly start with #!/usr/bin/env.
    l.symlink("usr/bin/env", "../../bin/busybox")
    l.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                         b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    l.file("etc/group", b"root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n")
    l.file("etc/hosts", b"")
    l.file("etc/resolv.conf", b"")
    return l.tar_bytes()


def compile_pause():
    """Returns the static pause binary, or None if it cannot be built here."""
    gcc = shutil.which("gcc")
    if not gcc:
        return None
    with tempfile.TemporaryDirectory(prefix="oci-pause-") as d:
        src, exe = os.path.join(d, "pause.c"), os.path.join(d, "pause")
        with open(src, "w") as f:
            f.write(PAUSE_C)
        cmd = [gcc, "-static", "-Os", "-s", "-Wl,--build-id=none", "-o", exe, src]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=GCC_WAIT_S,
                               env=dict(os.environ, SOURCE_DATE_EPOCH="1", LC_ALL="C"))
        except subprocess.TimeoutExpired:
            print("oci-images: gcc timed out; pause falls back to busybox sh",
                  file=sys.stderr)
            return None
        if r.returncode != 0:
            print("oci-images: cannot build static pause (libc6-dev installed?), "
                  "falling back to busybox sh:\n" + r.stderr.strip(), file=sys.stderr)
            return None
        with open(exe, "rb") as f:
            return f.read()


def pause_image(bb, mode):
    l = Layer()
    for d in ["dev", "proc", "sys", "etc"]:
        l.dir(d)
    binary = compile_pause() if mode == "c" else None
    if binary is not None:
        l.file("pause", binary, 0o755)
        # 65535 like the upstream image; numeric, so no /etc/passwd is needed.
        return l.tar_bytes(), base_config(entrypoint=["/pause"], user="65535:65535"), "c"
    l.file("bin/busybox", bb, 0o755)
    l.symlink("bin/sh", "busybox")
    l.symlink("bin/sleep", "busybox")
    l.dir("tmp", 0o1777)
    return (l.tar_bytes(),
            base_config(entrypoint=["/bin/sh", "-c", PAUSE_SH], user="65535:65535"), "sh")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = [a for a in sys.argv[1:] if a.startswith("--")]
    mode = "c"
    for o in opts:
        if o in ("--pause=c", "--pause=sh"):
            mode = o.split("=", 1)[1]
        else:
            sys.exit(__doc__)
    if len(args) != 1:
        sys.exit(__doc__)
    out = args[0]
    os.makedirs(out, exist_ok=True)
    bb = busybox_binary()

    p = os.path.join(out, "busybox.tar")
    digest = write_image(p, BUSYBOX_TAGS, busybox_layer(bb), base_config(cmd=["sh"]))
    print(f"{p} {','.join(BUSYBOX_TAGS)} {digest}")

    layer, cfg, kind = pause_image(bb, mode)
    p = os.path.join(out, "pause.tar")
    digest = write_image(p, PAUSE_TAGS, layer, cfg)
    print(f"{p} {','.join(PAUSE_TAGS)} {digest} (pause: {kind})")


if __name__ == "__main__":
    main()
