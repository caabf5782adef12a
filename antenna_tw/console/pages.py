"""
The console's pages, built as ``twisted.web.template`` tags: every text
and attribute value is escaped when flattened, so nothing a client sent
(annotations, dump names, products) can become markup. No script anywhere;
charts are SVG drawn here (``chart``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from twisted.web.template import Tag, flattenString, tags

from antenna_tw.console.crashes import CrashRecord, CrashRow, shown_annotations, throttle_result

# Values longer than this are folded in a <details>.
FOLD = 160
CSS = b"""
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfe0ff;text-decoration:none}header strong{margin-right:1em}
main{padding:1em 1.2em;max-width:1200px}
table{border-collapse:collapse;background:#fff;margin:.5em 0 1.2em}
td,th{border:1px solid #d6d9e0;padding:.25em .6em;text-align:left;vertical-align:top;font-size:.9em}
th{background:#eef0f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.tiles{display:flex;flex-wrap:wrap;gap:.8em;margin-bottom:1em}
.tile{background:#fff;border:1px solid #d6d9e0;padding:.5em .9em;min-width:9em}
.tile b{display:block;font-size:1.4em}.bad{color:#b00020}.good{color:#1a7f37}
pre{background:#fff;border:1px solid #d6d9e0;padding:.6em;overflow:auto;max-height:30em}
code{font-size:.9em}svg{background:#fff;border:1px solid #d6d9e0}
form.inline{display:inline}input[type=text],input[type=password]{padding:.3em;width:22em}
details summary{cursor:pointer;color:#24a}
"""


def _fmt_bytes(size: int) -> str:
    if size < 0:
        return "size unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)  # pragma: no cover


def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:g} ms"


def render(page: Tag) -> Any:
    """A Deferred of the page's bytes, with its doctype."""
    return flattenString(None, page).addCallback(lambda body: b"<!DOCTYPE html>\n" + body)


def layout(title: str, *content: Any, refresh: int | None = None,
           signed_in: bool = True) -> Tag:
    """The page around ``content``: title, style sheet, navigation."""
    head = tags.head(tags.meta(charset="utf-8"), tags.title(f"{title} · antenna-tw console"),
                     tags.link(rel="stylesheet", href="/static/console.css"))
    if refresh:
        head(tags.meta(**{"http-equiv": "refresh", "content": str(refresh)}))
    nav = tags.header(tags.strong("antenna-tw console"))
    if signed_in:
        nav(tags.a("Node", href="/"), tags.a("Recent crashes", href="/crashes"),
            tags.form(tags.button("Sign out", type="submit"), method="post",
                      action="/logout", class_="inline"))
    return tags.html(head, tags.body(nav, Tag("main")(tags.h1(title), *content)), lang="en")


def login_page(message: str = "", next_path: str = "/") -> Tag:
    """The login form (answered with 401 to every page asked for without the login cookie)."""
    return layout("Sign in", tags.p(message) if message else "", tags.form(
        tags.label("Console token ", tags.input(type="password", name="token",
                                                autocomplete="current-password",
                                                autofocus="autofocus")),
        tags.input(type="hidden", name="next", value=next_path),
        tags.button("Sign in", type="submit", id="sign-in"),
        method="post", action="/login"), signed_in=False)


# -- charts -------------------------------------------------------------------

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 180, 48, 22, 10


Series = tuple[str, str, Sequence[float | None], str]  # label, colour, values, "bar" or "line"


def chart(title: str, starts: Sequence[int], series: Sequence[Series], unit: str = "") -> Tag:
    """
    An SVG chart of per-minute ``series`` over the minutes ``starts``: bars
    side by side in each minute's slot, lines (with a dot per value; None is
    a gap) through the slots' middles; axes, grid and legend.
    """
    values = [v for _, _, vs, _ in series for v in vs if v is not None]
    top = max(values, default=0) or 1
    slots = max(len(starts), 1)
    plot_w, plot_h = WIDTH - LEFT - 10, HEIGHT - BOTTOM - TOP
    slot = plot_w / slots
    svg = Tag("svg")(**{"xmlns": "http://www.w3.org/2000/svg", "viewBox": f"0 0 {WIDTH} {HEIGHT}",
                        "width": str(WIDTH), "height": str(HEIGHT), "role": "img",
                        "class": "chart", "aria-label": title})
    svg(Tag("title")(title))
    for step in range(5):
        y = TOP + plot_h - plot_h * step / 4
        svg(Tag("line")(x1=str(LEFT), x2=str(WIDTH - 10), y1=f"{y:.1f}", y2=f"{y:.1f}",
                        stroke="#e3e6ec"))
        svg(Tag("text")(f"{top * step / 4:.3g}{unit}", x=str(LEFT - 4), y=f"{y + 4:.1f}",
                        **{"text-anchor": "end", "font-size": "10", "fill": "#5a5a5a"}))
    for index, anchor in ((0, "start"), (len(starts) // 2, "middle"), (len(starts) - 1, "end")):
        if 0 <= index < len(starts):
            x = LEFT + slot * (index + (0 if anchor == "start" else
                                       1 if anchor == "end" else 0.5))
            label = datetime.fromtimestamp(starts[index], UTC).strftime("%H:%M")
            svg(Tag("text")(label, x=f"{x:.1f}", y=str(HEIGHT - 6),
                            **{"text-anchor": anchor, "font-size": "10", "fill": "#5a5a5a"}))
    bars = [entry for entry in series if entry[3] == "bar"]
    bar_w = slot * 0.8 / max(len(bars), 1)

    def y_of(value: float) -> float:
        return TOP + plot_h - plot_h * value / top

    for number, (label, colour, points, kind) in enumerate(series):
        data = {"data-series": label, "class": "series"}
        if kind == "bar":
            offset = slot * 0.1 + bar_w * bars.index((label, colour, points, kind))
            for index, value in enumerate(points):
                height = plot_h * (value or 0) / top
                svg(Tag("rect")(x=f"{LEFT + slot * index + offset:.1f}",
                                y=f"{TOP + plot_h - height:.1f}", width=f"{bar_w:.1f}",
                                height=f"{height:.1f}", fill=colour, **data))
        else:
            segments: list[list[str]] = [[]]
            for index, value in enumerate(points):
                if value is None:
                    segments.append([])
                    continue
                x, y = LEFT + slot * (index + 0.5), y_of(value)
                segments[-1].append(f"{x:.1f},{y:.1f}")
                if value:  # a lone minute shows as a dot
                    svg(Tag("circle")(cx=f"{x:.1f}", cy=f"{y:.1f}", r="2", fill=colour))
            for part in segments:
                if len(part) > 1:
                    svg(Tag("polyline")(points=" ".join(part), fill="none", stroke=colour,
                                        **{"stroke-width": "1.5"}, **data))
        svg(Tag("rect")(x=str(LEFT + 10 + number * 120), y="2", width="10", height="10",
                        fill=colour))
        svg(Tag("text")(label, x=str(LEFT + 24 + number * 120), y="11",
                        **{"font-size": "10", "fill": "#3a3a3a"}))
    return svg


# -- the node page -----------------------------------------------------------


def _tile(label: str, value: Any, css: str = "") -> Tag:
    return tags.div(tags.b(str(value), class_=css) if css else tags.b(str(value)), label,
                    class_="tile")


def node_page(status: dict[str, Any]) -> Tag:
    """The node page: tiles, charts of the last hour, the tables, a row per process."""
    minutes = status["minutes"]
    last = minutes[-1] if minutes else {}
    hour = status["hour"]
    spool, storage, publisher = status["spool"], status["storage"], status["publisher"]
    storage_ok = not storage["errors"]
    tiles = tags.div(
        _tile("accepted this minute", last.get("accepted", 0)),
        _tile("refused this minute", last.get("refused", 0)),
        _tile("accepted in the hour", hour["accepted"]),
        _tile("refused in the hour", hour["refused"]),
        _tile("answer p50 / p99 (hour)", f"{_fmt_ms(hour['p50_ms'])} / {_fmt_ms(hour['p99_ms'])}"),
        _tile("spool backlog", spool["queued"]),
        _tile("oldest in spool", f"{spool['oldest_age']:.0f} s"),
        _tile("spool bytes", _fmt_bytes(spool["bytes"])),
        _tile(f"storage ({storage['name']})", "healthy" if storage_ok else "failing",
              "good" if storage_ok else "bad"),
        _tile("publisher" if publisher is None else f"publisher ({publisher['name']})",
              "none" if publisher is None else
              ("healthy" if publisher["healthy"] else "failing"),
              "" if publisher is None else ("good" if publisher["healthy"] else "bad")),
        class_="tiles", id="tiles")
    starts = [m["start"] for m in minutes]
    counts = chart("Crashes per minute, last hour", starts, [
        ("accepted", "#1a7f37", [m["accepted"] for m in minutes], "bar"),
        ("refused", "#b00020", [m["refused"] for m in minutes], "bar"),
        ("stored", "#2f6fd6", [m["stored"] for m in minutes], "line"),
    ])
    times = chart("Answer time per minute, last hour", starts, [
        ("p50", "#2f6fd6", [m["p50_ms"] for m in minutes], "line"),
        ("p99", "#c46a00", [m["p99_ms"] for m in minutes], "line"),
    ], unit=" ms")
    problems = tags.ul(*[tags.li(message, class_="bad") for message in storage["errors"]]) \
        if storage["errors"] else ""
    reasons = hour["refused_by_reason"]
    products = hour["by_product_version"]
    results = sorted({r for row in products.values() for r in row})
    return layout(
        "Node", tiles, problems,
        tags.h2("Last hour"), tags.div(counts, id="chart-crashes"),
        tags.div(times, id="chart-times"),
        tags.h2("Refused in the hour, by reason"),
        tags.table(tags.tr(tags.th("reason"), tags.th("crashes")),
                   *[tags.tr(tags.td(reason), tags.td(str(n), class_="n"))
                     for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])],
                   id="refused") if reasons else tags.p("None."),
        tags.h2("Crashes in the hour, by product and version"),
        tags.table(tags.tr(tags.th("product and version"), *[tags.th(r) for r in results]),
                   *[tags.tr(tags.td(name),
                             *[tags.td(str(row.get(r, 0)), class_="n") for r in results])
                     for name, row in sorted(products.items())],
                   id="products") if products else tags.p("None."),
        tags.h2("Processes"),
        tags.table(
            tags.tr(*[tags.th(h) for h in ("process", "pid", "running", "accepted (hour)",
                                           "spool backlog", "oldest", "spool bytes",
                                           "retrying")]),
            *[tags.tr(tags.td(p["name"]), tags.td(str(p["pid"] or "—")),
                      tags.td("yes" if p["running"] else "no"),
                      tags.td(str(p["accepted_last_hour"]), class_="n"),
                      tags.td(str(p["queued"]), class_="n"),
                      tags.td(f"{p['oldest_age']:.0f} s", class_="n"),
                      tags.td(_fmt_bytes(p["spool_bytes"]), class_="n"),
                      tags.td(str(p["retrying"]), class_="n"))
              for p in status["processes"]], id="processes"),
        refresh=10)


# -- crashes -----------------------------------------------------------------


def crash_link(crash_id: str) -> Tag:
    """A link to a crash's page."""
    return tags.a(crash_id, href="/crashes/" + quote(crash_id, safe=""))


def _dumps_cell(dumps: dict[str, int]) -> Tag:
    return tags.td(", ".join(f"{name or '(unnamed)'} ({_fmt_bytes(size)})"
                             for name, size in sorted(dumps.items())))


def recent_page(rows: Sequence[CrashRow], limit: int, message: str = "") -> Tag:
    """The recent crashes, newest first, with a form to find one by id."""
    return layout(
        "Recent crashes",
        tags.form(tags.label("Crash id ", tags.input(type="text", name="id")),
                  tags.button("Find", type="submit"), method="get", action="/crashes"),
        tags.p(message, class_="bad") if message else "",
        tags.p(f"The newest {len(rows)} crashes (at most {limit}): the spool's, then storage's."),
        tags.table(
            tags.tr(*[tags.th(h) for h in ("crash id", "time (UTC)", "product", "version",
                                           "throttle", "dumps", "state")]),
            *[tags.tr(tags.td(crash_link(row.crash_id)),
                      tags.td(datetime.fromtimestamp(row.time, UTC).strftime(
                          "%Y-%m-%d %H:%M:%S")),
                      tags.td(row.product), tags.td(row.version), tags.td(row.result),
                      _dumps_cell(row.dumps), tags.td(row.state),
                      **{"data-crash-id": row.crash_id})
              for row in rows], id="crashes"),
        refresh=30)


def _value_cell(value: Any) -> Tag:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) > FOLD:
        return tags.td(tags.details(tags.summary(text[:FOLD] + "…"), tags.pre(text)))
    return tags.td(text)


def _hex(value: int | None) -> str:
    return "—" if value is None else f"0x{value:x}"


def summary_section(name: str, summary: Any) -> Tag:
    """One dump's minidump summary (console/minidump.py's MinidumpSummary)."""
    section = tags.section(tags.h3(f"Minidump summary: {name or '(unnamed)'}"),
                           class_="minidump", **{"data-dump": name})
    if summary.error:
        section(tags.p(f"Not fully read: {summary.error}", class_="bad"))
    section(tags.table(
        tags.tr(tags.th("crash reason"), tags.td(summary.crash_reason or "—",
                                                 class_="crash-reason")),
        tags.tr(tags.th("crash address"), tags.td(_hex(summary.crash_address))),
        tags.tr(tags.th("crashing thread"), tags.td(str(summary.crashing_thread)
                                                    if summary.crashing_thread is not None
                                                    else "—")),
        tags.tr(tags.th("OS"), tags.td(" ".join(x for x in (summary.os, summary.os_version)
                                                 if x) or "—")),
        tags.tr(tags.th("CPU"), tags.td(" × ".join(x for x in (
            summary.cpu_arch, str(summary.cpu_count) if summary.cpu_count else None) if x)
            or "—"))))
    if summary.frames:
        section(tags.h4("Crashing thread, top frames"), tags.table(
            tags.tr(*[tags.th(h) for h in ("#", "module", "offset", "address", "found by")]),
            *[tags.tr(tags.td(str(f.index), class_="n"), tags.td(f.module or "—"),
                      tags.td(_hex(f.offset)), tags.td(_hex(f.address)), tags.td(f.trust))
              for f in summary.frames], class_="frames"))
    if summary.modules:
        more = " (more not shown)" if summary.modules_truncated else ""
        section(tags.details(
            tags.summary(f"{len(summary.modules)} modules{more}"),
            tags.table(tags.tr(*[tags.th(h) for h in ("module", "base", "size", "version")]),
                       *[tags.tr(tags.td(m.name), tags.td(_hex(m.base)),
                                 tags.td(_fmt_bytes(m.size), class_="n"),
                                 tags.td(m.version or "—")) for m in summary.modules])))
    return section


def crash_page(record: CrashRecord, summaries: Sequence[tuple[str, Any]],
               raw_json: str) -> Tag:
    """A crash: annotations (personal data left out), dumps, minidump summaries, raw JSON."""
    base = "/crashes/" + quote(record.crash_id, safe="")
    annotations = shown_annotations(record.raw_crash)
    return layout(
        f"Crash {record.crash_id}",
        tags.p(f"State: {record.state}. Throttle result: {throttle_result(record.crash_id)}.",
               id="state"),
        tags.h2("Annotations"),
        tags.table(*[tags.tr(tags.th(key), _value_cell(value))
                     for key, value in sorted(annotations.items())], id="annotations"),
        tags.h2("Dumps"),
        tags.table(tags.tr(tags.th("name"), tags.th("size"), tags.th("")),
                   *[tags.tr(tags.td(name or "(unnamed)"),
                             tags.td(f"{size} bytes", class_="n"),
                             tags.td(tags.a("download", href=f"{base}/dumps/"
                                            + quote(name or "_", safe=""), download="",
                                            class_="download")))
                     for name, size in sorted(record.dumps.items())], id="dumps"),
        *[summary_section(name, summary) for name, summary in summaries],
        tags.h2("Raw crash"),
        tags.p(tags.a("raw crash JSON", href=f"{base}/raw_crash.json")),
        tags.pre(raw_json, id="raw-crash"))
