#!/usr/bin/env python3
"""Assembles a single-layer OCI image archive (an OCI image layout in a tar) from host files, so the
local node needs no registry and no container engine. `ctr -n k8s.io images import` reads it.

    oci-image.py --name lifeboat.local/agent:dev --out agent.tar \
        --binary /usr/bin/pg_dump:/usr/bin/pg_dump --file ca.crt:/etc/ssl/ca.crt \
        --dir /tmp --entrypoint /usr/local/bin/lifeboat-agent

--binary copies an ELF executable and every shared library `ldd` lists for it (at the same
absolute paths, plus the dynamic loader), so a dynamically linked host program runs in the image.
--file copies one file as is; --tree copies a directory's files (symlinks resolved to their content)
at the same relative paths; --dir creates an empty directory (mode 1777 for /tmp). The layer is
reproducible: fixed mtimes, root ownership, sorted entries. Test infrastructure only.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

MTIME = 0
MERGED = ("/bin", "/lib", "/lib64", "/sbin")


def ldd_libraries(path):
    """Absolute paths of the shared libraries (and loader) `path` needs; empty when static."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    if out.returncode != 0:
        if "not a dynamic executable" in (out.stdout + out.stderr):
            return []
        sys.exit(f"oci-image: ldd {path}: {out.stderr.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        if "not found" in line:
            sys.exit(f"oci-image: {path} needs a library the host lacks: {line.strip()}")
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


class Layer:
    def __init__(self):
        self.entries = {}  # path in image -> (kind, source or target, mode)

    @staticmethod
    def canonical(dst):
        """Merged /usr: /bin, /lib, /lib64 and /sbin are symlinks into /usr, in the image too."""
        for top in MERGED:
            if dst == top or dst.startswith(top + "/"):
                return "/usr" + dst
        return dst

    def add_parents(self, dst):
        parts = dst.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            self.entries.setdefault(d, ("dir", None, 0o755))

    def add_file(self, src, dst):
        # Symlinks are resolved: the image gets the file's content at the requested path.
        dst = self.canonical(dst)
        real = os.path.realpath(src)
        if not os.path.isfile(real):
            sys.exit(f"oci-image: {src} is not a file")
        self.add_parents(dst)
        self.entries[dst] = ("file", real, os.stat(real).st_mode & 0o7777)

    def add_binary(self, src, dst):
        self.add_file(src, dst)
        for lib in ldd_libraries(src):
            # At the name the loader asks for, in its directory's canonical place
            # (/lib64/ld-linux-x86-64.so.2 -> /usr/lib64/ld-linux-x86-64.so.2).
            where = os.path.join(os.path.realpath(os.path.dirname(lib)), os.path.basename(lib))
            self.add_file(lib, where)

    def add_tree(self, src, dst):
        for root, _, files in os.walk(src, followlinks=True):
            for f in files:
                path = os.path.join(root, f)
                if os.path.isfile(os.path.realpath(path)):
                    self.add_file(path, os.path.join(dst, os.path.relpath(path, src)))

    def add_dir(self, dst, mode):
        dst = self.canonical(dst)
        self.add_parents(dst + "/x")
        self.entries[dst] = ("dir", None, mode)

    def add_symlink(self, target, dst):
        dst = self.canonical(dst)
        self.add_parents(dst)
        self.entries[dst] = ("symlink", target, 0o777)

    def tar_bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for dst in sorted(self.entries):
                kind, src, mode = self.entries[dst]
                info = tarfile.TarInfo(dst.lstrip("/"))
                info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
                info.mode = mode
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = src
                    tar.addfile(info)
                else:
                    info.size = os.path.getsize(src)
                    with open(src, "rb") as f:
                        tar.addfile(info, f)
        return buf.getvalue()


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime, info.mode = len(data), MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def small(tar, path, data):
    info = tarfile.TarInfo(path)
    info.size, info.mtime, info.mode = len(data), MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="full reference, e.g. lifeboat.local/pause:1")
    p.add_argument("--out", required=True)
    p.add_argument("--binary", action="append", default=[], metavar="SRC:DST")
    p.add_argument("--file", action="append", default=[], metavar="SRC:DST")
    p.add_argument("--tree", action="append", default=[], metavar="SRC:DST")
    p.add_argument("--dir", action="append", default=[], metavar="DST[:MODE]")
    p.add_argument("--symlink", action="append", default=[], metavar="TARGET:DST")
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--workdir", default="/")
    p.add_argument("--gzip", action="store_true", help="compress the layer (slower, smaller)")
    a = p.parse_args()

    layer = Layer()
    for top in MERGED:
        layer.entries[top] = ("symlink", "usr" + top, 0o777)
        layer.entries["/usr" + top] = ("dir", None, 0o755)
    layer.entries["/usr"] = ("dir", None, 0o755)
    for spec in a.binary:
        src, dst = spec.split(":", 1)
        layer.add_binary(src, dst)
    for spec in a.file:
        src, dst = spec.split(":", 1)
        layer.add_file(src, dst)
    for spec in a.tree:
        src, dst = spec.split(":", 1)
        layer.add_tree(src, dst)
    for spec in a.dir:
        dst, _, mode = spec.partition(":")
        layer.add_dir(dst, int(mode, 8) if mode else 0o755)
    for spec in a.symlink:
        target, dst = spec.split(":", 1)
        layer.add_symlink(target, dst)

    raw = layer.tar_bytes()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    if a.gzip:
        layer_data = gzip.compress(raw, compresslevel=6, mtime=MTIME)
        layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    else:
        layer_data = raw
        layer_type = "application/vnd.oci.image.layer.v1.tar"

    env = ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"] + a.env
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": env, "WorkingDir": a.workdir},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/node/oci-image.py"}],
    }
    if a.entrypoint:
        config["config"]["Entrypoint"] = a.entrypoint
    if a.cmd:
        config["config"]["Cmd"] = a.cmd
    if a.user:
        config["config"]["User"] = a.user

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        small(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        layer_desc = blob(tar, layer_data)
        config_desc = blob(tar, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": layer_type, **layer_desc}],
        }
        manifest_desc = blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_desc,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": a.name,
                        "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
        small(tar, "index.json", json.dumps(index, sort_keys=True).encode())
    os.replace(tmp, a.out)
    print(f"oci-image: {a.name} -> {a.out} ({len(layer.entries)} entries, layer {len(layer_data) // 1024} KiB, {manifest_desc['digest'][:19]})")


if __name__ == "__main__":
    main()
