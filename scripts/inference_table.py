#!/usr/bin/env python3
"""Side-by-side inference results: tessera's compiled plan against PyTorch eager, ONNX Runtime
and OpenVINO on the four headline networks, measured alternately in one sitting, written as
the results table `docs/results/inference.md` and spliced into README.md between the markers
`<!-- inference-table:begin -->` and `<!-- inference-table:end -->`.

    python3 scripts/inference_table.py [--rounds 3] [--configs 2x1,1x1,2x8] [--baselines DIR]
                                       [--tessera target/release/tessera] [--no-readme]

Each config is THREADSxBATCH. Per config and round it runs `tessera bench models --json
--threads T --batch B` and then `THREADS=T BATCH=B python3 DIR/torch_baselines.py
--infer-only ...`, and reports the median over rounds of each implementation's median. Every
row names the host (CPU model and ISA from `tessera cpu`), the date and both commands. Needs
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
    ap.add_argument("--no-readme", action="store_true")
    a = ap.parse_args()
    isa = subprocess.run([a.tessera, "cpu"], capture_output=True, text=True).stdout.strip()
    isa = isa.splitlines()[0] if isa else "?"
    host = f"{cpu_model()}, {os.cpu_count()} cores, {isa}"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for cfg in a.configs.split(","):
        threads, batch = (int(v) for v in cfg.split("x"))
        t_cmd = [a.tessera, "bench", "models", "--json", "--threads", str(threads), "--batch", str(batch)]
        b_cmd = [sys.executable, os.path.join(a.baselines, "torch_baselines.py"), "--infer-only", *KEYS.values()]
        env = dict(os.environ, THREADS=str(threads), BATCH=str(batch))
        samples = {}  # (arch, impl) -> [ms]
        for r in range(a.rounds):
            print(f"[{cfg}] round {r + 1}/{a.rounds}: tessera", file=sys.stderr, flush=True)
            for j in lines(t_cmd):
                samples.setdefault((j["arch"], "tessera"), []).append(j["median_ms"])
                samples.setdefault((j["arch"], "sys"), []).append(j.get("sys_time_fraction", 0) * 100)
            print(f"[{cfg}] round {r + 1}/{a.rounds}: baselines", file=sys.stderr, flush=True)
            for j in lines(b_cmd, env):
                arch = next((k for k, v in KEYS.items() if v == j["what"]), None)
                if arch and "ms" in j:
                    samples.setdefault((arch, j["impl"]), []).append(j["ms"])
        for arch in KEYS:
            med = {k[1]: statistics.median(v) for k, v in samples.items() if k[0] == arch}
            rows.append((arch, threads, batch, med))
        tcmd = " ".join(["tessera", *t_cmd[1:]])
        bcmd = f"THREADS={threads} BATCH={batch} python3 torch_baselines.py --infer-only"
        rows.append(("cmd", threads, batch, {"tessera": tcmd, "baselines": bcmd}))
    md = [
        f"Host: {host}. Date: {date}. Medians over {a.rounds} alternating rounds (tessera, then the",
        "baselines) in one sitting; the machine was shared with other jobs, so absolute times are",
        "noisy and only the ratios of one sitting mean something. ms per batch; `ratio` is tessera's",
        "time over the faster of ONNX Runtime and OpenVINO (below 1: tessera is faster).",
        "",
        "| network | threads | batch | tessera ms | sys % | PyTorch ms | ONNX Runtime ms | OpenVINO ms | ratio | images/s (tessera) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cmds = []
    f = lambda v: "-" if v is None else f"{v:.2f}"
    for arch, threads, batch, m in rows:
        if arch == "cmd":
            cmds.append(f"- threads {threads}, batch {batch}: `{m['tessera']}` beside `{m['baselines']}`")
            continue
        t = m.get("tessera")
        best = min([v for v in (m.get("onnxruntime"), m.get("openvino")) if v is not None], default=None)
        ratio = f"{t / best:.2f}x" if t and best else "-"
        ips = f"{batch * 1e3 / t:.1f}" if t else "-"
        md.append(f"| {arch} | {threads} | {batch} | {f(t)} | {f(m.get('sys'))} | {f(m.get('torch-eager'))} | "
                  f"{f(m.get('onnxruntime'))} | {f(m.get('openvino'))} | {ratio} | {ips} |")
    md += ["", "Commands:", *cmds]
    table = "\n".join(md) + "\n"
    out = os.path.join(ROOT, "docs", "results", "inference.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
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
