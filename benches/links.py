#!/usr/bin/env python3
"""A registry volume shaped by repository count rather than bytes: what a real DTR holds
most of. Each repository gets LAYERS layer links, REVISIONS manifest revision links and
TAGS tags (current link and index entry), every link a 71-byte `sha256:<hex>` file in its
own directory, as the distribution registry writes them; blobs/ holds one small blob per
of 256 small blobs (named by their sha256) so the tree has the registry's shape without its bytes.

    benches/links.py OUT_PARENT [--repositories 2000] [--layers 100] [--revisions 100]
                     [--tags 10] [--seed 1]

The same arguments always give the same tree (names, contents and mtimes). 2,000
repositories make 220,000 link files in about 474,000 directories.
"""

import argparse
import hashlib
import os


def digest(*parts):
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()


def write_link(directory, target, mtime):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "link")
    with open(path, "w") as f:
        f.write("sha256:" + target)
    os.utime(path, (mtime, mtime))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_parent")
    p.add_argument("--repositories", type=int, default=2000)
    p.add_argument("--layers", type=int, default=100)
    p.add_argument("--revisions", type=int, default=100)
    p.add_argument("--tags", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    root = os.path.join(a.out_parent, "dtr-registry-%012x" % a.seed)
    v2 = os.path.join(root, "_data", "docker", "registry", "v2")
    mtime = 1767225600
    files = 0
    # Layers are shared across repositories the way base images are: a pool a tenth the
    # size of all layer links.
    pool = max(1, a.repositories * a.layers // 10)
    for r in range(a.repositories):
        repo = os.path.join(v2, "repositories", "team%03d" % (r % 100), "app%05d" % r)
        for l in range(a.layers):
            layer = digest(a.seed, "layer", (r * 7919 + l * 104729) % pool)
            write_link(os.path.join(repo, "_layers", "sha256", layer), layer, mtime)
        revisions = [digest(a.seed, "manifest", r, m) for m in range(a.revisions)]
        for m in revisions:
            write_link(os.path.join(repo, "_manifests", "revisions", "sha256", m), m, mtime)
        for t in range(a.tags):
            tag = os.path.join(repo, "_manifests", "tags", "v%d" % t)
            m = revisions[-1 - t % len(revisions)]
            write_link(os.path.join(tag, "current"), m, mtime)
            write_link(os.path.join(tag, "index", "sha256", m), m, mtime)
        files += a.layers + a.revisions + 2 * a.tags
    blobs = os.path.join(v2, "blobs", "sha256")
    for i in range(256):
        content = ("blob %d of seed %d\n" % (i, a.seed)).encode()
        d = hashlib.sha256(content).hexdigest()
        directory = os.path.join(blobs, d[:2], d)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "data"), "wb") as f:
            f.write(content)
        files += 1
    print("%s: %d files" % (root, files))


if __name__ == "__main__":
    main()
