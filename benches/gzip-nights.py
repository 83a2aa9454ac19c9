#!/usr/bin/env python3
"""A 30-night app-layer rebuild series: what gzip content saves, and what it costs.

Each night an application layer is rebuilt with a few changed files (GNU tar, then a gzip
encoder: GNU gzip -6 by default) and pushed to a registry volume, which keeps every night's
layer. Two repositories back the volume up every night: one storing layers as they are, one
with gzip content (`init --gzip`). Prints, per night and in total, the bytes each stored and
the backup times.

    benches/gzip-nights.py [--nights 30] [--layer-mib 64] [--changes 3] [--encoder "gzip -6 -n"]
                           [--init-args "--chunk-avg 262144 ..."]

Needs a release build (cargo build --release -p stowage-cli); BENCH_DIR (default
/tmp/stowage-gzip-nights) holds the volume and both repositories.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

WORDS = (
    "usr lib share doc copyright python3 site-packages __init__ import return self def class "
    "None True False {\"name\": 0.1.0 x86_64-linux-gnu README LICENSE = ; #!/bin/sh if then fi "
    "for in do done echo export PATH /opt/app config.yaml server: port: 8080 handler request "
    "response error logger.info('started') await async fn pub struct impl"
).split()


def text(rng, size):
    out, n = [], 0
    while n < size:
        w = rng.choice(WORDS)
        if rng.random() < 0.1:
            w += str(rng.randrange(100000))
        out.append(w)
        n += len(w) + 1
    return (" ".join(out) + "\n").encode()[:size]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--layer-mib", type=int, default=64)
    ap.add_argument("--changes", type=int, default=3)
    ap.add_argument("--encoder", default="gzip -6 -n")
    ap.add_argument("--init-args", default="", help="for both repositories, e.g. "
                    "\"--chunk-min 65536 --chunk-avg 262144 --chunk-max 1048576\"")
    args = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    stowage = os.path.join(target, "release", "stowage")
    work = os.environ.get("BENCH_DIR", "/tmp/stowage-gzip-nights")
    shutil.rmtree(work, ignore_errors=True)
    app = os.path.join(work, "app")
    volume = os.path.join(work, "dtr-registry-gzipnights")
    rng = random.Random(42)

    # The application: files of 64 KiB to 2 MiB, 1 in 8 binary-like (less compressible).
    files, total = [], 0
    while total < args.layer_mib << 20:
        size = rng.randrange(64 << 10, 2 << 20)
        path = os.path.join(app, f"srv/mod{len(files) % 16:02d}/file{len(files):04d}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if len(files) % 8 == 7:
            data = bytes(rng.randrange(256) if rng.random() < 0.5 else 0 for _ in range(size))
        else:
            data = text(rng, size)
        with open(path, "wb") as f:
            f.write(data)
        files.append(path)
        total += size

    env = dict(os.environ, STOWAGE_PASSWORD="bench")
    repos = {"raw": [], "gzip": ["--gzip"]}
    for name, flags in repos.items():
        subprocess.run([stowage, "--repo", f"{work}/repo-{name}", "init", *flags,
                        *args.init_args.split()], env=env,
                       check=True, capture_output=True)

    print(f"{'night':>5} {'layer MB':>9} {'raw stored MB':>14} {'gzip stored MB':>15} "
          f"{'raw s':>6} {'gzip s':>7}  gzip layers/partial/fallbacks")
    sums = {"raw": 0, "gzip": 0}
    times = {"raw": 0.0, "gzip": 0.0}
    layer_total = 0
    for night in range(1, args.nights + 1):
        if night > 1:
            for path in rng.sample(files, args.changes):
                with open(path, "r+b") as f:
                    size = os.path.getsize(path)
                    at = rng.randrange(size)
                    f.seek(at)
                    f.write(text(rng, min(2048, size - at)))
        tar = subprocess.run(
            ["tar", "--sort=name", "--mtime=@1700000000", "--owner=0", "--group=0",
             "--numeric-owner", "-cf", "-", "srv"], cwd=app, check=True, capture_output=True
        ).stdout
        layer = subprocess.run(args.encoder.split(), input=tar, check=True,
                               capture_output=True).stdout
        layer_total += len(layer)
        digest = hashlib.sha256(layer).hexdigest()
        blob = os.path.join(volume, "docker/registry/v2/blobs/sha256", digest[:2], digest)
        os.makedirs(blob, exist_ok=True)
        with open(os.path.join(blob, "data"), "wb") as f:
            f.write(layer)
        row = {}
        for name in repos:
            started = time.monotonic()
            out = subprocess.run([stowage, "--repo", f"{work}/repo-{name}", "backup", "--json",
                                  volume], env=env, check=True, capture_output=True)
            took = time.monotonic() - started
            summary = json.loads(out.stdout)["snapshot"]["summary"]
            row[name] = (summary["stored_bytes"], took, summary)
            sums[name] += summary["stored_bytes"]
            times[name] += took
        g = row["gzip"][2]
        print(f"{night:5d} {len(layer) / 1e6:9.1f} {row['raw'][0] / 1e6:14.2f} "
              f"{row['gzip'][0] / 1e6:15.2f} {row['raw'][1]:6.2f} {row['gzip'][1]:7.2f}  "
              f"{g['gzip_layers']}/{g['gzip_partial']}/{g['gzip_fallbacks']}", flush=True)
    print(f"total: layers {layer_total / 1e6:.1f} MB; raw stored {sums['raw'] / 1e6:.1f} MB "
          f"in {times['raw']:.1f} s; gzip stored {sums['gzip'] / 1e6:.1f} MB in "
          f"{times['gzip']:.1f} s; gzip stores {100 * sums['gzip'] / sums['raw']:.1f}% of raw")
    # Restore the last night from each (every registry blob is checked against its digest).
    for name in repos:
        out_dir = os.path.join(work, f"restore-{name}")
        started = time.monotonic()
        subprocess.run([stowage, "-q", "--repo", f"{work}/repo-{name}", "restore", "latest",
                        "--target", out_dir], env=env, check=True)
        took = time.monotonic() - started
        print(f"restore from {name}: {took:.2f} s ({layer_total / 1e6 / took:.1f} MB/s)")
        shutil.rmtree(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
