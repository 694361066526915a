#!/usr/bin/env python3
"""The project's measured numbers: one row per measurement in docs/results/*.jsonl, rendered
into docs/results.md (every row, by section) and the README's table (the rows marked
"readme"), between the markers `<!-- results:begin -->` and `<!-- results:end -->`.

Every row names the host CPU, the instruction set in use, the thread count, the date (UTC) and
the exact command, so a number can be re-measured and compared. Rows are added by running the
measurement through this script (`record`), which fills those fields in itself, or by hand
(`add`) for numbers measured elsewhere (a baseline run on the same machine, an older host).

  python3 scripts/results.py record --file training --section "Training on the digits" \\
      --what "vit_digits, 60 epochs" --format "{final_test_acc:.2%} in {seconds:.0f} s" \\
      [--readme] [--note TEXT] [--threads 2] -- ./target/release/tessera train vit_digits --json
      (runs the command, formats its last JSON line with --format, appends the row)
  python3 scripts/results.py add --file F --section S --what W --value V --command C \\
      --host H --isa I --threads T --date "YYYY-MM-DD HH:MM UTC" [--baseline B] [--ratio R]
      [--readme] [--note N]
  python3 scripts/results.py render     (rewrites docs/results.md and the README table)
  python3 scripts/results.py check      (exit 1 if either is out of date)

Rows of one (file, section, what, host) replace each other: re-recording a measurement on the
same host updates it. Needs only the Python standard library.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DATA = os.path.join(ROOT, "docs", "results")
OUT = os.path.join(ROOT, "docs", "results.md")
README = os.path.join(ROOT, "README.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# Files rendered first, in this order; any other file follows alphabetically.
FILE_ORDER = ["kernels", "inference", "train_step", "training"]
FIELDS = ["section", "what", "value", "baseline", "ratio", "host", "isa", "threads", "date",
          "command", "note", "readme"]


def host_cpu():
    """`model name` plus family / model / stepping from /proc/cpuinfo (Linux), else platform."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine()
    get = lambda k: (re.search(r"^%s\s*:\s*(.*)$" % re.escape(k), text, re.M) or [None, "?"])[1]
    return "%s (family %s model %s stepping %s)" % (get("model name").strip(), get("cpu family"),
                                                    get("model"), get("stepping"))


def tessera_isa(cmd):
    """The instruction set `tessera cpu --json` reports, honouring TESSERA_ISA."""
    exe = cmd[0] if cmd and os.path.basename(cmd[0]) == "tessera" else os.path.join(
        ROOT, "target", "release", "tessera")
    try:
        out = subprocess.run([exe, "cpu", "--json"], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["isa"]
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        return "unknown"


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def load_rows():
    rows = []
    if not os.path.isdir(DATA):
        return rows
    order = {n: i for i, n in enumerate(FILE_ORDER)}
    names = sorted(os.listdir(DATA), key=lambda n: (order.get(n[:-len(".jsonl")], len(order)), n))
    for name in names:
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(DATA, name)) as f:
            for i, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    sys.exit("%s:%d: not JSON: %s" % (name, i, e))
                missing = [k for k in ("section", "what", "value", "host", "isa", "date", "command")
                           if not row.get(k)]
                if missing:
                    sys.exit("%s:%d: missing %s" % (name, i, ", ".join(missing)))
                row["_file"] = name[:-len(".jsonl")]
                rows.append(row)
    return rows


def append_row(file, row):
    os.makedirs(DATA, exist_ok=True)
    path = os.path.join(DATA, file + ".jsonl")
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                old = json.loads(line)
                if (old["section"], old["what"], old["host"]) != (row["section"], row["what"], row["host"]):
                    kept.append(old)
    kept.append({k: row[k] for k in FIELDS if row.get(k) not in (None, "")})
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in kept:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    print("%s: %s | %s = %s" % (os.path.relpath(path, ROOT), row["section"], row["what"], row["value"]))


def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_md(rows):
    out = ["# Measured results", "",
           "Every number the documentation quotes, one row per measurement, generated by",
           "`python3 scripts/results.py render` from `docs/results/*.jsonl` (do not edit by hand;",
           "add rows with `scripts/results.py record` or `add`). Each row names the host CPU, the",
           "instruction set in use, the threads, the date and the exact command; notes say when the",
           "machine was shared with other work, which inflates wall times.", ""]
    sections = []
    for r in rows:
        if r["section"] not in sections:
            sections.append(r["section"])
    for s in sections:
        out += ["## " + s, "",
                "| what | result | baseline | ratio | host | ISA | threads | date | command | note |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["section"] == s):
            out.append("| " + " | ".join(cell(r.get(k, "")) if k != "command" else "`%s`" % cell(r[k])
                                         for k in ("what", "value", "baseline", "ratio", "host", "isa",
                                                   "threads", "date", "command", "note")) + " |")
        out.append("")
    return "\n".join(out)


def render_readme_table(rows):
    sel = [r for r in rows if r.get("readme")]
    out = ["| measurement | what | tessera | baseline | ratio | host, ISA, threads, date | command |",
           "|---|---|---|---|---|---|---|"]
    for r in sel:
        host = "%s, %s, %s thr, %s" % (r["host"].split(" (family")[0], r["isa"], r.get("threads", "?"),
                                       r["date"])
        out.append("| %s | %s | %s | %s | %s | %s | `%s` |" % (cell(r["section"]), cell(r["what"]), cell(r["value"]),
                                                         cell(r.get("baseline", "")), cell(r.get("ratio", "")),
                                                         cell(host), cell(r["command"])))
    return "\n".join(out)


def rendered():
    rows = load_rows()
    md = render_md(rows)
    with open(README) as f:
        readme = f.read()
    if BEGIN not in readme or END not in readme:
        sys.exit("README.md has no %s ... %s markers" % (BEGIN, END))
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new_readme = head + BEGIN + "\n" + render_readme_table(rows) + "\n" + END + tail
    return md, readme, new_readme


def cmd_render(_):
    md, _, new_readme = rendered()
    for path, text in ((OUT, md), (README, new_readme)):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        print("wrote", os.path.relpath(path, ROOT))


def cmd_check(_):
    md, readme, new_readme = rendered()
    stale = []
    if not os.path.exists(OUT) or open(OUT).read() != md:
        stale.append("docs/results.md")
    if readme != new_readme:
        stale.append("README.md")
    if stale:
        print("out of date: %s (run python3 scripts/results.py render)" % ", ".join(stale))
        return 1
    print("docs/results.md and the README table are up to date")
    return 0


def cmd_record(a):
    if not a.cmd:
        sys.exit("record: give the command after --")
    cmd = a.cmd[1:] if a.cmd[0] == "--" else a.cmd
    date = now_utc()
    env = dict(os.environ)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit("record: %s failed (%d):\n%s" % (shlex.join(cmd), p.returncode, p.stderr))
    objs = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                objs.append(json.loads(line))
            except ValueError:
                pass
    if not objs:
        sys.exit("record: %s printed no JSON line (give --json)" % shlex.join(cmd))
    try:
        value = a.format.format(**objs[-1], lines=objs)
    except (KeyError, IndexError, ValueError) as e:
        sys.exit("record: --format %r does not fit the last JSON line %s: %s" % (a.format, objs[-1], e))
    shown = [("tessera" if os.path.basename(c) == "tessera" else c) for c in cmd]
    if os.environ.get("TESSERA_ISA"):
        shown = ["TESSERA_ISA=" + os.environ["TESSERA_ISA"]] + shown
    threads = a.threads
    if threads is None and "--threads" in cmd:
        threads = cmd[cmd.index("--threads") + 1]
    append_row(a.file, {"section": a.section, "what": a.what, "value": value, "baseline": a.baseline,
                        "ratio": a.ratio, "host": host_cpu(), "isa": tessera_isa(cmd),
                        "threads": str(threads) if threads is not None else "all cores",
                        "date": date, "command": shlex.join(shown), "note": a.note,
                        "readme": a.readme or None})


def cmd_add(a):
    append_row(a.file, {"section": a.section, "what": a.what, "value": a.value, "baseline": a.baseline,
                        "ratio": a.ratio, "host": a.host, "isa": a.isa, "threads": a.threads,
                        "date": a.date, "command": a.command, "note": a.note, "readme": a.readme or None})


def main():
    ap = argparse.ArgumentParser(description="tessera's results file and its renderings")
    sub = ap.add_subparsers(dest="op", required=True)
    sub.add_parser("render").set_defaults(fn=cmd_render)
    sub.add_parser("check").set_defaults(fn=cmd_check)
    for name, fn in (("record", cmd_record), ("add", cmd_add)):
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--file", required=True, help="docs/results/FILE.jsonl")
        p.add_argument("--section", required=True)
        p.add_argument("--what", required=True)
        p.add_argument("--baseline")
        p.add_argument("--ratio")
        p.add_argument("--note")
        p.add_argument("--readme", action="store_true", help="also show the row in the README table")
        if name == "record":
            p.add_argument("--format", required=True, help="Python format string over the last JSON line")
            p.add_argument("--threads")
            p.add_argument("cmd", nargs=argparse.REMAINDER)
        else:
            for k in ("value", "command", "host", "isa", "threads", "date"):
                p.add_argument("--" + k, required=True)
    a = ap.parse_args()
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
