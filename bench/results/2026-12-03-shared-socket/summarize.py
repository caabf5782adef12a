#!/usr/bin/env python3
"""Per-pair table, per-pair B/A ratios and medians from the sessions' runs.jsonl files."""
import json
import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
files = sorted(here.glob("session*/runs.jsonl"), key=lambda p: int(p.parent.name[7:].split("-")[0])) if len(sys.argv) < 2 else map(Path, sys.argv[1:])
all_pairs = []
out = []
for f in files:
    recs = [json.loads(x) for x in open(f)]
    pairs = {}
    for r in recs:
        pairs.setdefault(r["pair"], {})[r["label"]] = r
    out.append(f"### {f.parent.name} (run order {recs[0]['order']})\n")
    out.append("| pair | A crashes/s | B crashes/s | B/A crashes/s | A p50 | B p50 | A p99 ms "
               "| B p99 ms | B/A p99 | A CPU ms/crash | B CPU ms/crash | A worker split "
               "| B worker split | other load % A / B | non200 A/B | answered/stored/lost A "
               "| answered/stored/lost B |")
    out.append("|" + "---|" * 17)
    for n, p in sorted(pairs.items()):
        if "A" not in p or "B" not in p:
            continue
        a, b = p["A"], p["B"]
        all_pairs.append((f.parent.name, n, a, b))
        out.append(
            f"| {n} | {a['rps']:.0f} | {b['rps']:.0f} | {b['rps'] / a['rps']:.2f} "
            f"| {a['p50_ms']:.1f} | {b['p50_ms']:.1f} | {a['p99_ms']:.1f} | {b['p99_ms']:.1f} "
            f"| {b['p99_ms'] / a['p99_ms']:.2f} | {a['cpu_ms_per_crash']:.2f} "
            f"| {b['cpu_ms_per_crash']:.2f} | {'/'.join(map(str, a['worker_split']))} "
            f"| {'/'.join(map(str, b['worker_split']))} "
            f"| {a['other_cpu_pct']} / {b['other_cpu_pct']} | {a['non200']}/{b['non200']} "
            f"| {a['answered']}/{a['stored']}/{a['lost']} "
            f"| {b['answered']}/{b['stored']}/{b['lost']} |")
    out.append("")


def med(xs):
    return statistics.median(xs)


def rng(xs, fmt="{:.2f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}..{fmt.format(max(xs))})"


A = [a for _, _, a, _ in all_pairs]
B = [b for _, _, _, b in all_pairs]
out.append(f"### All {len(all_pairs)} pairs\n")
out.append("| figure | A: SO_REUSEPORT + hand-off (today) | B: shared adopted socket | B/A per pair, median (min..max) |")
out.append("|---|---|---|---|")
for key, name, fmt in (("rps", "crashes/s", "{:.0f}"), ("p50_ms", "p50 ms", "{:.1f}"),
                       ("p99_ms", "p99 ms", "{:.1f}"),
                       ("cpu_ms_per_crash", "CPU ms per stored crash", "{:.2f}")):
    ratios = [b[key] / a[key] for _, _, a, b in all_pairs]
    out.append(f"| {name} | {rng([a[key] for a in A], fmt)} | {rng([b[key] for b in B], fmt)} "
               f"| {rng(ratios)} |")
wins = sum(1 for _, _, a, b in all_pairs if b["p99_ms"] < a["p99_ms"])
winr = sum(1 for _, _, a, b in all_pairs if b["rps"] > a["rps"])
out.append("")
out.append(f"B had the lower p99 in {wins} of {len(all_pairs)} pairs and the higher "
           f"crashes/s in {winr} of {len(all_pairs)}.")
imb = lambda r: max(r["worker_split"]) / sum(r["worker_split"])  # noqa: E731
out.append(f"Share of crashes served by the busier worker: A {rng([imb(a) for a in A])}, "
           f"B {rng([imb(b) for b in B])}.")
lostA = sum(a["lost"] for a in A); lostB = sum(b["lost"] for b in B)
out.append(f"Answered crashes lost: A {lostA} of {sum(a['answered'] for a in A)}, "
           f"B {lostB} of {sum(b['answered'] for b in B)}; non-200: A "
           f"{sum(a['non200'] for a in A)}, B {sum(b['non200'] for b in B)}; SHA-256 mismatches "
           f"{sum(r['sha_bad'] for r in A + B)} of {sum(r['sha_checked'] for r in A + B)} checked.")
out.append(f"Other load (CPU of everything but the collector and wrk, % of both CPUs): "
           f"median {med([r['other_cpu_pct'] for r in A + B]):.1f}, "
           f"max {max(r['other_cpu_pct'] for r in A + B):.1f}.")
# Per session: the median of its pairs' ratios (sessions alternate the order AB / BA).
out.append("")
out.append("| session | pairs | other load % (median) | B/A crashes/s | B/A p99 | B/A CPU/crash |")
out.append("|---|---|---|---|---|---|")
sessions = {}
for name, n, a, b in all_pairs:
    sessions.setdefault(name, []).append((a, b))
for name, ps in sessions.items():
    out.append(f"| {name} | {len(ps)} | {med([x['other_cpu_pct'] for p in ps for x in p]):.0f} "
               f"| {med([b['rps'] / a['rps'] for a, b in ps]):.2f} "
               f"| {med([b['p99_ms'] / a['p99_ms'] for a, b in ps]):.2f} "
               f"| {med([b['cpu_ms_per_crash'] / a['cpu_ms_per_crash'] for a, b in ps]):.2f} |")
quiet = [(a, b) for _, _, a, b in all_pairs if max(a["other_cpu_pct"], b["other_cpu_pct"]) < 20]
if quiet:
    out.append("")
    out.append(f"Quieter pairs only (other load < 20 % in both runs; {len(quiet)} pairs): B/A "
               f"crashes/s {rng([b['rps'] / a['rps'] for a, b in quiet])}, p99 "
               f"{rng([b['p99_ms'] / a['p99_ms'] for a, b in quiet])}, CPU/crash "
               f"{rng([b['cpu_ms_per_crash'] / a['cpu_ms_per_crash'] for a, b in quiet])}.")
gaps = [(a.get("held_gap_mean"), b.get("held_gap_mean")) for _, _, a, b in all_pairs
        if a.get("held_gap_mean") is not None and b.get("held_gap_mean") is not None]
if gaps:
    out.append(f"Connections held by the busier worker minus the other (ss, 1/s, runs with a "
               f"sampler; {len(gaps)} pairs), mean per run: A {rng([g[0] for g in gaps], '{:.1f}')}, "
               f"B {rng([g[1] for g in gaps], '{:.1f}')}.")
print("\n".join(out))
