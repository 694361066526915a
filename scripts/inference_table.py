#!/usr/bin/env python3
"""Side-by-side inference results: tessera's compiled plan against PyTorch eager, ONNX Runtime
and OpenVINO on the four headline networks, measured alternately in one sitting, written as
the results table `docs/results/inference.md` and spliced into README.md between the markers
`<!-- inference-table:begin -->` and `<!-- inference-table:end -->`.

    python3 scripts/inference_table.py [--rounds 3] [--configs 2x1,1x1,2x8] [--archs A,B]
                                       [--baselines DIR] [--tessera target/release/tessera]
                                       [--out FILE] [--no-readme]

Each config is THREADSxBATCH. Per config, round and network it runs `tessera bench ARCH
--json --threads T --batch B`, then `THREADS=T BATCH=B python3 DIR/torch_baselines.py
--infer-only KEY` for that network alone, then tessera again: the mean of the two tessera
medians is paired with the baselines timed between them, so a shared machine's drift over
those seconds hits both sides alike. The table reports the median over rounds of each
implementation's time and, as the ratio, the median of the per-round ratios (tessera over
the faster of ONNX Runtime and OpenVINO) with their range. Every row names the host (CPU
model, family / model / stepping, ISA from `tessera cpu`), the date and the commands. Needs
the baseline script of the shared bench directory (torch, timm, onnxruntime, openvino).
"""
import argparse, datetime, json, os, platform, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {  # tessera arch -> baseline key
    "vit_base_patch16_224": "vit_b16",
    "mobilenetv2_100": "mobilenet_v2",
    "mobilenetv3_large_100": "mobilenet_v3_large",
    "seresnet101": "se_resnet101",
}
BEGIN, END = "<!-- inference-table:begin -->", "<!-- inference-table:end -->"


def lines(cmd, env=None):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


def cpu_model():
    """The model name and, since virtual machines often report a bare "Intel(R) Xeon(R)
    Processor", the family / model / stepping that tell one generation from another."""
    fields = {}
    try:
        for l in open("/proc/cpuinfo"):
            if ":" in l:
                k, v = (t.strip() for t in l.split(":", 1))
                fields.setdefault(k, v)
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']}"
        name += f" stepping {fields['stepping']})" if "stepping" in fields else ")"
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", default="2x1,1x1,2x8")
    ap.add_argument("--baselines", default=os.path.join(ROOT, "..", "shared", "bench"))
    ap.add_argument("--tessera", default=os.path.join(ROOT, "target", "release", "tessera"))
    ap.add_argument("--archs", default=",".join(KEYS))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "inference.md"))
    ap.add_argument("--no-readme", action="store_true")
    a = ap.parse_args()
    archs = [x for x in a.archs.split(",") if x]
    unknown = [x for x in archs if x not in KEYS]
    if unknown:
        sys.exit(f"unknown network(s) {unknown}; choose from {list(KEYS)}")
    isa = subprocess.run([a.tessera, "cpu"], capture_output=True, text=True).stdout.strip()
    isa = isa.splitlines()[0] if isa else "?"
    host = f"{cpu_model()}, {os.cpu_count()} cores, {isa}"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for cfg in a.configs.split(","):
        threads, batch = (int(v) for v in cfg.split("x"))
        env = dict(os.environ, THREADS=str(threads), BATCH=str(batch))
        samples = {}  # (arch, impl) -> [ms per round]; impl "ratio": per-round ratios
        for r in range(a.rounds):
            for arch in archs:
                t_cmd = [a.tessera, "bench", arch, "--json", "--threads", str(threads), "--batch", str(batch)]
                b_cmd = [sys.executable, os.path.join(a.baselines, "torch_baselines.py"), "--infer-only", KEYS[arch]]
                print(f"[{cfg}] round {r + 1}/{a.rounds}: {arch}", file=sys.stderr, flush=True)
                before = lines(t_cmd)[0]
                base = {j["impl"]: j["ms"] for j in lines(b_cmd, env) if j.get("what") == KEYS[arch] and "ms" in j}
                after = lines(t_cmd)[0]
                t = (before["median_ms"] + after["median_ms"]) / 2
                sys_pct = (before.get("sys_time_fraction", 0) + after.get("sys_time_fraction", 0)) * 50
                samples.setdefault((arch, "tessera"), []).append(t)
                samples.setdefault((arch, "sys"), []).append(sys_pct)
                for impl, ms in base.items():
                    samples.setdefault((arch, impl), []).append(ms)
                best = min([base[k] for k in ("onnxruntime", "openvino") if k in base], default=None)
                if best:
                    samples.setdefault((arch, "ratio"), []).append(t / best)
        for arch in archs:
            med = {k[1]: statistics.median(v) for k, v in samples.items() if k[0] == arch}
            ratios = samples.get((arch, "ratio"), [])
            med["ratio_range"] = (min(ratios), max(ratios)) if ratios else None
            rows.append((arch, threads, batch, med))
        tcmd = f"tessera bench ARCH --json --threads {threads} --batch {batch}"
        bcmd = f"THREADS={threads} BATCH={batch} python3 torch_baselines.py --infer-only KEY"
        rows.append(("cmd", threads, batch, {"tessera": tcmd, "baselines": bcmd}))
    md = [
        f"Host: {host}. Date: {date}. {a.rounds} rounds in one sitting; in each, per network,",
        "tessera, then the baselines, then tessera again (the mean of the two tessera runs is paired",
        "with the baselines between them). The machine was shared with other jobs, so absolute",
        "times drift; ms per batch are medians over rounds, and `ratio` is the median over rounds",
        "of tessera's time over the faster of ONNX Runtime and OpenVINO (below 1: tessera is",
        "faster), with the range of the per-round ratios.",
        "",
        "| network | threads | batch | tessera ms | sys % | PyTorch ms | ONNX Runtime ms | OpenVINO ms | ratio | ratio range | images/s (tessera) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cmds = []
    f = lambda v: "-" if v is None else f"{v:.2f}"
    for arch, threads, batch, m in rows:
        if arch == "cmd":
            cmds.append(f"- threads {threads}, batch {batch}: `{m['tessera']}` beside `{m['baselines']}`, per network")
            continue
        t = m.get("tessera")
        ratio = f"{m['ratio']:.2f}x" if m.get("ratio") else "-"
        rr = m.get("ratio_range")
        rng = f"{rr[0]:.2f}-{rr[1]:.2f}" if rr else "-"
        ips = f"{batch * 1e3 / t:.1f}" if t else "-"
        md.append(f"| {arch} | {threads} | {batch} | {f(t)} | {f(m.get('sys'))} | {f(m.get('torch-eager'))} | "
                  f"{f(m.get('onnxruntime'))} | {f(m.get('openvino'))} | {ratio} | {rng} | {ips} |")
    md += ["", "Commands:", *cmds]
    table = "\n".join(md) + "\n"
    out = a.out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        fh.write("# Inference results (generated by `scripts/inference_table.py`)\n\n" + table)
    print(table)
    readme = os.path.join(ROOT, "README.md")
    if not a.no_readme:
        s = open(readme).read()
        if BEGIN in s and END in s:
            head, rest = s.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            open(readme, "w").write(head + BEGIN + "\n" + table + END + tail)


if __name__ == "__main__":
    main()
