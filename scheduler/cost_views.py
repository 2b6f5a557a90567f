"""Cost reports as users see them: the API's report models built from the ledger, and those models rendered as a
table, CSV or JSON, or drawn as a PNG chart of spend over time. `spillover cost-report` and GET /api/v1/cost and
/api/v1/budgets share them, so the command prints the same with or without --server."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from spillover.scheduler.api_models import BudgetReport, CostReport
from spillover.scheduler.costs import PERIODS, budget_report, cost_report, parse_when, period_report, utc_text
from spillover.scheduler.errors import UserError

PERIOD_AXIS = {"day": "day (UTC)", "week": "week (UTC, from Monday)", "month": "month (UTC)"}


def build_cost_report(store: Any, by: str, *, split: str | None = None, since: float | None = None,
                      until: float | None = None, team: str | None = None) -> CostReport:
    """The report for `by` (a ledger key, or day, week or month with an optional split) over [since, until)."""
    scope = "all" if team is None else f"team:{team}"
    if by in PERIODS:
        rows = period_report(store, by, split, since=since, until=until, team=team)
        return CostReport.of_periods(by, rows, split=split, since=since, until=until, scope=scope)
    return CostReport.of_groups(by, cost_report(store, by, since=since, until=until, team=team), since=since,
                                until=until, scope=scope)


def build_budget_report(config: Any, store: Any, now: float, *, team: str | None = None) -> BudgetReport:
    """Every budget line (with `team`, that team's and its queues') in its period open at `now`."""
    return BudgetReport.of(budget_report(config, store, now, team=team), now,
                           "all" if team is None else f"team:{team}")


# ---- the command ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportSource:
    """Where `spillover cost-report` reads: an API client (with --server) or the config's store."""

    client: Callable[[], Any] | None
    config: Callable[[], Any]
    store: Callable[[], Any]


def when(option: str, text: str | None, now: float) -> float | None:
    """--since/--until as epoch seconds, or a UserError naming the option and what it takes."""
    if text is None:
        return None
    try:
        return parse_when(text, now)
    except ValueError as e:
        raise UserError(f"{option}: {e}") from None


def cost_report_command(source: ReportSource, *, by: str, split: str | None, since: str | None, until: str | None,
                        budgets: bool, by_given: bool, plot: Path | None, fmt: str, now: float, out: Console,
                        err: Console) -> None:
    """`spillover cost-report`: every option checked first (a mistake is a UserError naming it), then one report."""
    t0, t1 = when("--since", since, now), when("--until", until, now)
    if t0 is not None and t1 is not None and t0 >= t1:
        raise UserError(f"--until: must be after --since ({utc_text(t1)} is not after {utc_text(t0)})")
    if budgets:
        given = [o for o, v in (("--since", since), ("--until", until), ("--split", split), ("--plot", plot),
                                ("--by", by if by_given else None)) if v is not None]
        if given:
            raise UserError(f"--budgets: shows each budget in its period open now; it takes no {', '.join(given)}")
        report = (source.client().budgets() if source.client else
                  build_budget_report(source.config(), source.store(), now))
        render_budgets(report, fmt, out, err)
        return
    if split is not None and by not in PERIODS:
        raise UserError(f"--split: only with --by day, week or month (got --by {by})")
    if plot is not None:
        if by not in PERIODS:
            raise UserError(f"--plot: draws spend per period; use it with --by day, week or month (got --by {by})")
        check_plot_path(plot)
    def fetch(split_by: str | None) -> CostReport:
        if source.client:
            return source.client().cost(by, split=split_by, since=t0, until=t1)
        return build_cost_report(source.store(), by, split=split_by, since=t0, until=t1)

    report = fetch(split)
    render_cost(report, fmt, out)
    if plot is not None:
        write_plot(report if split else fetch("cloud"), plot)
        err.print(f"wrote {plot}", markup=False, highlight=False)


# ---- cost reports ------------------------------------------------------------------------------------


def _range_text(report: CostReport) -> str:
    if report.since is None and report.until is None:
        return ""
    since = utc_text(report.since) if report.since is not None else "the start"
    until = utc_text(report.until) if report.until is not None else "now"
    return f", {since} to {until}"


def render_cost(report: CostReport, fmt: str, console: Console, title: str | None = None) -> None:
    """A cost report as a table (on `console`), CSV or JSON (on stdout)."""
    if report.by in PERIODS:
        _render_periods(report, fmt, console, title)
    else:
        render_groups(report.rows, report.by, fmt, console, title or f"cost by {report.by}{_range_text(report)}")


def render_groups(rows: list, by: str, fmt: str, console: Console, title: str | None = None) -> None:
    """Rows with key, node_hours, gpu_hours and usd as a table, CSV or JSON."""
    if fmt == "json":
        sys.stdout.write(json.dumps([{by: r.key, "node_hours": round(r.node_hours, 4),
                                      "gpu_hours": round(r.gpu_hours, 4), "usd": round(r.usd, 2)} for r in rows],
                                    indent=2) + "\n")
        return
    if fmt == "csv":
        _write_csv([by, "node_hours", "gpu_hours", "usd"],
                   [[r.key, f"{r.node_hours:.4f}", f"{r.gpu_hours:.4f}", f"{r.usd:.2f}"] for r in rows])
        return
    table = Table(title=title or f"cost by {by}")
    table.add_column(by)
    for col in ("node-hours", "GPU-hours", "USD"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(Text(r.key), f"{r.node_hours:,.1f}", f"{r.gpu_hours:,.1f}", f"{r.usd:,.2f}")
    table.add_row("[bold]total[/bold]", f"{sum(r.node_hours for r in rows):,.1f}",
                  f"{sum(r.gpu_hours for r in rows):,.1f}", f"[bold]{sum(r.usd for r in rows):,.2f}[/bold]")
    console.print(table)


def _render_periods(report: CostReport, fmt: str, console: Console, title: str | None) -> None:
    split, rows = report.split, report.rows
    if fmt in ("json", "csv"):
        items = []
        for r in rows:
            item: dict[str, Any] = {"period": r.period, "start": utc_text(r.start or 0), "end": utc_text(r.end or 0)}
            if split:
                item[split] = r.key
            item.update(node_hours=round(r.node_hours, 4), gpu_hours=round(r.gpu_hours, 4), usd=round(r.usd, 2))
            items.append(item)
        if fmt == "json":
            sys.stdout.write(json.dumps(items, indent=2) + "\n")
        else:
            heads = ["period", "start", "end"] + ([split] if split else []) + ["node_hours", "gpu_hours", "usd"]
            _write_csv(heads, [[item[h] if not isinstance(item[h], float) else
                                (f"{item[h]:.2f}" if h == "usd" else f"{item[h]:.4f}") for h in heads]
                               for item in items])
        return
    title = title or (f"cost by {report.by}" + (f" and {split}" if split else "") + f"{_range_text(report)}"
                      + (" (USD)" if split else ""))
    table = Table(title=title)
    table.add_column(report.by)
    weekly = report.by == "week"
    if weekly:
        table.add_column("from")
    periods: dict[str, list] = {}
    for r in rows:
        periods.setdefault(r.period or "", []).append(r)
    if not split:
        for col in ("node-hours", "GPU-hours", "USD"):
            table.add_column(col, justify="right")
        for label, (r,) in periods.items():
            table.add_row(label, *([utc_text(r.start or 0)[:10]] if weekly else []), f"{r.node_hours:,.1f}",
                          f"{r.gpu_hours:,.1f}", f"{r.usd:,.2f}")
        table.add_row("[bold]total[/bold]", *([""] if weekly else []), f"{sum(r.node_hours for r in rows):,.1f}",
                      f"{sum(r.gpu_hours for r in rows):,.1f}", f"[bold]{report.total_usd:,.2f}[/bold]")
        console.print(table)
        return
    keys = list(dict.fromkeys(r.key for r in rows))
    for k in keys:
        table.add_column(Text(k), justify="right")
    table.add_column("total", justify="right")
    for label, prs in periods.items():
        table.add_row(label, *([utc_text(prs[0].start or 0)[:10]] if weekly else []),
                      *(f"{r.usd:,.2f}" for r in prs), f"{sum(r.usd for r in prs):,.2f}")
    table.add_row("[bold]total[/bold]", *([""] if weekly else []),
                  *(f"{sum(r.usd for r in rows if r.key == k):,.2f}" for k in keys),
                  f"[bold]{report.total_usd:,.2f}[/bold]")
    console.print(table)


def _write_csv(heads: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(heads)
    w.writerows(rows)
    sys.stdout.write(buf.getvalue())


# ---- budgets -----------------------------------------------------------------------------------------

BUDGET_FIELDS = ["budget", "owner", "name", "cloud", "period", "start", "end", "usd", "spent", "share", "forecast",
                 "warn_at", "state"]
_STATE_STYLE = {"warning": "yellow", "exhausted": "bold red", "closed": "dim", "not open": "dim"}


def render_budgets(report: BudgetReport, fmt: str, console: Console, err: Console) -> None:
    """Each budget line against its spend: a table (per-cloud parts indented under their line), CSV or JSON."""
    if not report.lines:
        where = "in the config (set budget: on a team under teams:, or on a queue)" if report.scope == "all" \
            else f"for {report.scope}"
        (console if fmt == "table" else err).print(f"no budgets {where}", markup=False, highlight=False)
        if fmt == "table":
            return
    items = [{"budget": b.id, "owner": b.owner, "name": b.name, "cloud": b.cloud, "period": b.period,
              "start": utc_text(b.start), "end": utc_text(b.end), "usd": round(b.usd, 2), "spent": round(b.spent, 2),
              "share": round(b.share, 4), "forecast": round(b.forecast, 2), "warn_at": b.warn_at, "state": b.state}
             for b in report.lines]
    if fmt == "json":
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
        return
    if fmt == "csv":
        _write_csv(BUDGET_FIELDS, [["" if item[h] is None else item[h] for h in BUDGET_FIELDS] for item in items])
        return
    table = Table(title=f"budgets at {utc_text(report.at)}" + ("" if report.scope == "all" else f" ({report.scope})"),
                  caption="forecast: the spend at the end of the period, at the rate of the period so far")
    table.add_column("budget")
    table.add_column("period")
    for col in ("budget $", "spent $", "share", "forecast $"):
        table.add_column(col, justify="right")
    table.add_column("state")
    for b in report.lines:
        table.add_row(Text(("  " if b.cloud else "") + b.id), Text(b.period), f"{b.usd:,.2f}", f"{b.spent:,.2f}",
                      f"{b.share:.0%}", f"{b.forecast:,.2f}", Text(b.state, style=_STATE_STYLE.get(b.state, "")))
    console.print(table)


# ---- the chart ---------------------------------------------------------------------------------------


def check_plot_path(path: Path) -> Path:
    """The --plot file, or a UserError naming what is wrong with it (not .png, a directory, no such directory)."""
    if path.is_dir():
        raise UserError(f"--plot: {str(path)!r} is a directory; name a .png file")
    if path.suffix.lower() != ".png":
        raise UserError(f"--plot: must name a .png file (got {str(path)!r})")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"--plot: directory {str(parent)!r} does not exist")
    return path


def spend_figure(report: CostReport):
    """A matplotlib Figure (Agg canvas) of the report's spend: one stacked bar per period, a layer per value of the
    split. A report by period without a split is one layer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    periods = list(dict.fromkeys(r.period for r in report.rows))
    keys = list(dict.fromkeys(r.key for r in report.rows)) if report.split else ["spend"]
    usd = {(r.period, r.key if report.split else "spend"): r.usd for r in report.rows}
    fig = Figure(figsize=(max(6.0, min(18.0, 0.45 * len(periods) + 3)), 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = [0.0] * len(periods)
    for key in keys:
        heights = [usd.get((p, key), 0.0) for p in periods]
        ax.bar(periods, heights, bottom=bottom, label=key)
        bottom = [b + h for b, h in zip(bottom, heights)]
    by_what = f" by {report.split}" if report.split else ""
    ax.set_title(f"Spend per {report.by}{by_what}{_range_text(report)}" + ("" if report.scope == "all"
                                                                           else f" ({report.scope})"))
    ax.set_xlabel(PERIOD_AXIS.get(report.by, report.by))
    ax.set_ylabel("spend ($, USD)")
    ax.yaxis.set_major_formatter("${x:,.0f}")
    if periods:
        ax.tick_params(axis="x", labelrotation=45 if len(periods) > 6 else 0)
        if report.split:
            handles, labels = ax.get_legend_handles_labels()
            ax.legend(handles[::-1], labels[::-1], title=report.split, fontsize="small")  # top layer first
    else:
        ax.text(0.5, 0.5, "no spend in the ledger for this range", ha="center", va="center", transform=ax.transAxes)
    return fig


def write_plot(report: CostReport, path: Path) -> None:
    """The chart of `report` as a PNG at `path`; a file that cannot be written is a UserError."""
    fig = spend_figure(report)
    try:
        fig.savefig(path, format="png")
    except OSError as e:
        raise UserError(f"--plot: cannot write {str(path)!r}: {e.strerror or e}") from None
