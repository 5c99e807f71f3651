# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The timeline picture of a run: one row per host, one bar per step, on a UTC time axis.

Built only from the timestamps the run recorded (``report['timeline']``, see
plugin_utils/report.py): freeze, stage, pre-warm, flip window, observation window, rollback.
A step that started but never ended is drawn up to the end of the picture with a dashed outline.
Plain SVG text, no dependency; a browser or any Markdown viewer shows it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from xml.sax.saxutils import escape, quoteattr

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report import SPAN_STEPS, parse_time

COLORS = {
    "freeze": "#6c8ebf",
    "stage": "#a68cc9",
    "prewarm": "#d6b656",
    "flip": "#e07b00",
    "observe": "#5fa052",
    "rollback": "#c0392b",
    "hook": "#8c8c8c",
}
LABELS = {
    "freeze": "freeze",
    "stage": "stage",
    "prewarm": "pre-warm",
    "flip": "flip window",
    "observe": "observation",
    "rollback": "rollback",
    "hook": "hook tasks",
}
RESULT_COLORS = {
    "on_go": "#2e7d32", "rolled_back": "#c0392b", "on_c": "#455a64", "failed": "#b71c1c",
    "unreachable": "#6a1b9a", "unknown": "#6a1b9a", "locked": "#ef6c00",
}
RUN_COLORS = {"success": "#2e7d32", "failed": "#b71c1c", "running": "#1565c0", "incomplete": "#6a1b9a"}
TICKS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)

WIDTH = 1000
LEFT = 230
RIGHT = 30
TOP = 64
ROW = 26
BAR = 16
MIN_BAR_PX = 3.0


def _tick(span_s, width_px):
    for step in TICKS_S:
        if span_s / step <= max(2, width_px // 90):
            return step
    return TICKS_S[-1]


def _fmt_clock(moment, step):
    return moment.strftime("%H:%M:%S" if step < 60 else "%H:%M")


def render_svg(report):
    """SVG text of the run's timeline (``report`` as plugin_utils/report.build_report returns it)."""
    timeline = report.get("timeline") or {}
    rows = timeline.get("rows") or []
    start, end = parse_time(timeline.get("start")), parse_time(timeline.get("end"))
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + max(1, len(rows)) * ROW + 70
    result = report.get("result") or "running"
    title = "%s %s: %s" % ("MTProxy", report.get("playbook") or "run", report.get("run_id") or "")
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
        'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">' % (WIDTH, height, WIDTH, height),
        "<title>%s</title>" % escape(title),
        '<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>' % (WIDTH, height),
        '<text x="10" y="20" font-size="15" font-weight="bold">%s</text>' % escape(title),
        '<text x="10" y="38" fill=%s font-weight="bold">result: %s</text>' % (
            quoteattr(RUN_COLORS.get(result, "#000000")), escape(result)),
    ]
    if start is None or end is None or not rows:
        out.append('<text x="10" y="%d">no step of this run recorded a time yet</text>' % (TOP + 14))
        out.append("</svg>")
        return "\n".join(out) + "\n"
    span_s = max((end - start).total_seconds(), 1.0)
    out.append('<text x="%d" y="38" fill="#444444">%s to %s UTC (%s s)</text>' % (
        LEFT, start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%H:%M:%S"), _num(span_s)))

    def x_of(moment):
        return LEFT + (moment - start).total_seconds() / span_s * plot_w

    # Grid and time axis (UTC).
    step = _tick(span_s, plot_w)
    first = int(start.timestamp() // step + 1) * step
    axis_y = TOP + len(rows) * ROW + 4
    tick = first
    while tick <= end.timestamp():
        x = LEFT + (tick - start.timestamp()) / span_s * plot_w
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e0e0e0"/>' % (x, TOP - 6, x, axis_y))
        label = _fmt_clock(start.fromtimestamp(tick, start.tzinfo), step)
        out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555555">%s</text>' % (x, axis_y + 16, label))
        tick += step
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888888"/>' % (LEFT, axis_y, WIDTH - RIGHT, axis_y))
    out.append('<text x="%d" y="%d" fill="#555555">UTC</text>' % (WIDTH - RIGHT - 24, axis_y + 32))

    for index, row in enumerate(rows):
        y = TOP + index * ROW
        if index % 2:
            out.append('<rect x="0" y="%d" width="%d" height="%d" fill="#f7f7f7"/>' % (y - 5, WIDTH, ROW))
        out.append('<text x="10" y="%d">%s</text>' % (y + 12, escape(str(row.get("host")))))
        res = row.get("result") or "unknown"
        out.append('<text x="%d" y="%d" text-anchor="end" fill=%s font-weight="bold">%s</text>' % (
            LEFT - 8, y + 12, quoteattr(RESULT_COLORS.get(res, "#000000")), escape(res)))
        notes = []
        right = LEFT
        for span in row.get("spans") or []:
            begin = parse_time(span.get("started_at"))
            finish = parse_time(span.get("finished_at"))
            open_end = finish is None
            if begin is None and finish is None:
                continue
            begin = begin or finish
            finish = finish or end
            x1, x2 = x_of(begin), x_of(finish)
            width = max(x2 - x1, MIN_BAR_PX)
            step_name = span.get("step")
            color = COLORS.get(step_name, "#999999")
            failed = span.get("result") in ("failed", "unreachable")
            extra = ""
            if open_end:
                extra = ' stroke="#000000" stroke-dasharray="4 2"'
            elif failed:
                extra = ' stroke="#b71c1c" stroke-width="2"'
            tip = "%s %s: %s to %s%s" % (
                row.get("host"), LABELS.get(step_name, step_name), span.get("started_at") or "?",
                span.get("finished_at") or "no end recorded",
                " (%s)" % span["result"] if span.get("result") not in (None, "ok") else "")
            out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" rx="2" fill=%s%s><title>%s</title></rect>' % (
                x1, y, width, BAR, quoteattr(color), extra, escape(tip)))
            right = max(right, x1 + width)
            if failed or open_end:
                notes.append("%s: %s" % (LABELS.get(step_name, step_name), "no end" if open_end else span["result"]))
        if notes:
            # After the row's last bar; right-aligned inside the plot when there is no room left.
            text = escape("; ".join(notes))
            if right + 8 + 6 * len(text) < WIDTH - 4:
                out.append('<text x="%.1f" y="%d" font-size="11" fill="#b71c1c">%s</text>' % (right + 5, y + 12, text))
            else:
                approx = 6.2 * len("; ".join(notes)) + 6
                out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#ffffff" fill-opacity="0.9"/>' % (
                    WIDTH - RIGHT - 4 - approx, y + 1, approx, BAR - 2))
                out.append('<text x="%d" y="%d" font-size="11" fill="#b71c1c" text-anchor="end">%s</text>' % (
                    WIDTH - RIGHT - 7, y + 12, text))

    # Legend.
    legend_y = axis_y + 46
    x = 10
    for step_name in SPAN_STEPS:
        out.append('<rect x="%d" y="%d" width="14" height="10" fill=%s/>' % (x, legend_y - 9, quoteattr(COLORS[step_name])))
        out.append('<text x="%d" y="%d">%s</text>' % (x + 18, legend_y, escape(LABELS[step_name])))
        x += 30 + 7 * len(LABELS[step_name])
    out.append('<text x="%d" y="%d" fill="#555555">dashed: no end recorded</text>' % (x, legend_y))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _num(value):
    return ("%.4g" % value) if value < 10000 else "%d" % round(value)
