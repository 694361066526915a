#!/usr/bin/env python3
"""Data-parallel scaling on one machine: one process with 2 threads against `mpirun -np 2`
with one thread per process, SGD training steps of the global batch (default 16) of
ViT-Ti/16 and MobileNetV2 at 224x224, in alternating rounds (threaded, then two processes,
network by network), medians over the rounds. Prints a table with the host's CPU, instruction
set and the date; `--jsonl FILE` keeps every round's raw JSON.

Run on an idle machine from the project root after
`cargo build --release -p tessera-cli --features distributed`:

    scripts/distributed_scaling.py                      # 3 rounds, the two 224x224 networks
    scripts/distributed_scaling.py --rounds 1 --iters 2 --archs mobilenetv2_digits  # smoke

Each measurement is `tessera bench ARCH --train --batch B --json`: the median step time over
its timed steps (`--iters`, default: as many as fit in about 10 s, 3 to 20) after one warm-up
step; under mpirun rank 0 reports it together with the gradient communication per step (the
time exposed after backward, and the copying into and out of the all-reduce buckets).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys


def run(cmd):
    """Runs `cmd`, returns the JSON object on its last stdout line."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"no JSON from: {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="global batch per step")
    ap.add_argument("--iters", type=int, help="timed steps per measurement (default: tessera's)")
    ap.add_argument(
        "--archs",
        default="vit_tiny_patch16_224,mobilenetv2_100",
        help="comma-separated architectures",
    )
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--bin", default="./target/release/tessera")
    ap.add_argument(
        "--mpirun-args",
        default="--bind-to core --map-by core",
        help="extra mpirun options (e.g. --oversubscribe on a machine with fewer cores)",
    )
    ap.add_argument("--jsonl", help="also write every round's raw result here")
    a = ap.parse_args()
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"{a.bin} not found: cargo build --release -p tessera-cli --features distributed")
    if os.geteuid() == 0:
        # Open MPI refuses to run as root unless told.
        os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    n = a.processes
    iters = ["--iters", str(a.iters)] if a.iters else []
    archs = [s for s in a.archs.split(",") if s]
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = {arch: {"threads": [], "procs": []} for arch in archs}
    out = open(a.jsonl, "w") if a.jsonl else None
    host = {}
    for r in range(1, a.rounds + 1):
        for arch in archs:
            common = [arch, "--train", "--batch", str(a.batch), "--json", *iters]
            one = run([a.bin, "bench", *common, "--threads", str(n)])
            many = run(
                ["mpirun", "-np", str(n), *a.mpirun_args.split(), a.bin, "bench"]
                + common
                + ["--threads", "1"]
            )
            if many.get("processes") != n:
                sys.exit(f"the mpirun run did not report {n} processes (built without --features distributed?): {many}")
            host = {"cpu": one.get("cpu"), "isa": one.get("isa")}
            rows[arch]["threads"].append(one)
            rows[arch]["procs"].append(many)
            print(
                f"round {r}/{a.rounds} {arch}: 1x{n} threads {one['train_step_ms']:.1f} ms, "
                f"{n}x1 processes {many['train_step_ms']:.1f} ms "
                f"(communication {many['comm_exposed_ms_per_step']:.2f} ms exposed)",
                file=sys.stderr,
            )
            if out:
                for side, res in (("threads", one), ("processes", many)):
                    out.write(json.dumps({"round": r, "side": side, "r": res}) + "\n")
                out.flush()
    med = lambda rs, k: statistics.median(x[k] for x in rs)
    print(
        f"host: {host.get('cpu')} ({platform.machine()}, {os.cpu_count()} logical CPUs), ISA {host.get('isa')}, "
        f"{started:%Y-%m-%d %H:%M} UTC; global batch {a.batch}, SGD training step, "
        f"medians of {a.rounds} alternating rounds"
    )
    head = (
        f"| network | 1 process x {n} threads (ms) | {n} processes x 1 thread (ms) | "
        f"processes / threads | communication exposed (ms/step) | bucket copies (ms/step) |"
    )
    print(head)
    print("|" + "---|" * 6)
    for arch in archs:
        t, p = rows[arch]["threads"], rows[arch]["procs"]
        st, sp = med(t, "train_step_ms"), med(p, "train_step_ms")
        print(
            f"| {arch} | {st:.1f} | {sp:.1f} | {sp / st:.2f} | "
            f"{med(p, 'comm_exposed_ms_per_step'):.2f} | {med(p, 'comm_copy_ms_per_step'):.2f} |"
        )


if __name__ == "__main__":
    main()
