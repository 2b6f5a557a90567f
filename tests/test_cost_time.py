"""Cost reports over time: --since/--until (absolute and relative), per day, week and month with a split by cloud,
team or queue, on-prem time labelled as such, budget lines against their spend with the forecast, CSV and JSON that
agree with the table, a PNG chart, and the same through GET /api/v1/cost and /api/v1/budgets with role visibility."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml
from api_helpers import bearer, serve, token
from conftest import BASE_CONFIG, make_config

from spillover.scheduler.config import parse_config
from spillover.scheduler.cost_views import build_budget_report, build_cost_report, spend_figure
from spillover.scheduler.store import LedgerEntry, Store
from spillover.scheduler.teams import calendar_period

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = "application/problem+json"
H = 3600.0


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def entry(bucket: float, where: str, usd: float, job: str = "", team: str = "", queue: str = "",
          hours: float = 1.0, gpus: int = 8) -> LedgerEntry:
    """A ledger row on cluster `where`: aws (pool aws/p4d), gke (gcp, pool gke/a2) or onprem (no pool)."""
    cloud, pool = {"aws": ("aws", "aws/p4d"), "gke": ("gcp", "gke/a2"), "onprem": ("onprem", "")}[where]
    node = f"{where}-{job or 'idle'}-{bucket:.0f}"
    return LedgerEntry(bucket, where, cloud, node, hours, gpus * hours, usd, job, queue, team, "r1" if pool else "",
                       pool)


# Three months of spend: month and week boundaries, a month with no spend (2026-08), both clouds, on-prem, idle.
HISTORY = [
    entry(at("2026-07-20T10:00"), "aws", 40.0, "j1", "ml", "research"),
    entry(at("2026-07-20T10:00"), "aws", 5.0),                                   # idle share of that node
    entry(at("2026-09-28T00:00"), "gke", 30.0, "j2", "platform", "prod"),        # Monday: week 2026-W40 starts
    entry(at("2026-09-30T23:00"), "aws", 25.0, "j3", "ml", "research"),          # last hour of September
    entry(at("2026-09-30T23:00"), "onprem", 8.0, "j4", "ml", "research"),
    entry(at("2026-10-01T00:00"), "aws", 12.5, "j5", "ml", "research"),          # first hour of October
    entry(at("2026-10-01T00:00"), "aws", 2.5),
    entry(at("2026-10-04T23:00"), "gke", 7.0, "j6", "platform", "prod"),         # Sunday: still W40
    entry(at("2026-10-05T00:00"), "onprem", 6.0, "j7", "platform", "prod"),      # Monday: W41
    entry(at("2026-10-06T00:00"), "aws", 9.0, "j8", "platform", "prod"),
    entry(at("2026-10-06T00:00"), "aws", 1.0),
]


def spillover(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "spillover.scheduler.cli", *args], capture_output=True, text=True,
                          env=e, timeout=120)


def ok(*args: str) -> str:
    r = spillover(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def table(text: str) -> list[list[str]]:
    """The header and body rows of the first rich table in `text`, as cells."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line[:1] in ("┃", "│"):
            rows.append([c.strip() for c in line.strip("┃│").replace("┃", "│").split("│")])
    return rows


def money(cell: str) -> float:
    return float(cell.replace(",", ""))


BUDGETS = {
    "teams": [{"name": "ml", "budget": {"usd": 1000, "period": "month", "clouds": {"aws": 400}, "warn_at": 0.8}},
              {"name": "platform", "budget": {"usd": 100, "period": "day"}}],
    "queues": [{"name": "research", "team": "ml", "budget": {"usd": 600, "period": "week"}},
               {"name": "prod", "team": "platform",
                "budget": {"usd": 50, "period": "window", "start": "2026-01-01T00:00:00Z",
                           "end": "2026-02-01T00:00:00Z"}}],
}


def config_file(tmp_path: Path, **changes) -> Path:
    data = copy.deepcopy(BASE_CONFIG)
    data["store"] = {"url": f"sqlite:///{tmp_path / 'store.db'}"}
    data.update(copy.deepcopy(changes))
    path = tmp_path / "spillover.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def filled(tmp_path: Path, entries: list[LedgerEntry], **changes) -> tuple[Path, Store]:
    path = config_file(tmp_path, **changes)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.accrue("aws", max(e.bucket for e in entries) + H, entries)
    return path, store


def expected(entries, period: str, key=lambda e: "") -> dict[tuple[str, str], float]:
    """{(period start as a date, key): dollars} summed straight from the entries."""
    out: dict[tuple[str, str], float] = {}
    for e in entries:
        start = datetime.fromtimestamp(calendar_period(period, e.bucket)[0], timezone.utc).strftime("%Y-%m-%d")
        out[(start, key(e))] = out.get((start, key(e)), 0.0) + e.usd
    return out


# ---- periods -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_period_totals_are_the_sums_of_the_ledger_entries_in_them(tmp_path, period):
    cfg, _ = filled(tmp_path, HISTORY)
    rows = json.loads(ok("cost-report", "-c", str(cfg), "--by", period, "-o", "json"))
    got = {(r["start"][:10], ""): r["usd"] for r in rows}
    want = expected(HISTORY, period)
    assert {k: v for k, v in got.items() if v} == pytest.approx(want)
    assert sum(r["usd"] for r in rows) == pytest.approx(sum(e.usd for e in HISTORY))
    # oldest first, contiguous: the periods with no spend between the first and the last are there as zeros
    assert [r["start"] for r in rows] == sorted(r["start"] for r in rows)
    assert all(a["end"] == b["start"] for a, b in zip(rows, rows[1:]))
    if period == "month":
        assert [r["period"] for r in rows] == ["2026-07", "2026-08", "2026-09", "2026-10"]
        assert rows[1]["usd"] == 0
    if period == "week":
        w40 = next(r for r in rows if r["period"] == "2026-W40")
        assert (w40["start"], w40["end"]) == ("2026-09-28T00:00:00Z", "2026-10-05T00:00:00Z")
        assert w40["usd"] == pytest.approx(30 + 25 + 8 + 12.5 + 2.5 + 7)  # Monday 00:00 to Sunday 23:00


def test_month_split_by_team_has_a_column_per_team_that_adds_up(tmp_path):
    cfg, _ = filled(tmp_path, HISTORY)
    out = ok("cost-report", "-c", str(cfg), "--by", "month", "--split", "team")
    assert "cost by month and team" in out
    head, *body = table(out)
    assert head == ["month", "ml", "platform", "(idle)", "total"]  # most dollars first; idle cloud time its own
    cells = {r[0]: dict(zip(head[1:], map(money, r[1:]))) for r in body}
    want = expected(HISTORY, "month", key=lambda e: e.team or "(idle)")
    for month, start in (("2026-07", "2026-07-01"), ("2026-09", "2026-09-01"), ("2026-10", "2026-10-01")):
        for team in ("ml", "platform", "(idle)"):
            assert cells[month][team] == pytest.approx(want.get((start, team), 0.0)), (month, team)
        assert cells[month]["total"] == pytest.approx(sum(v for (s, _), v in want.items() if s == start))
    assert cells["2026-08"] == {"ml": 0, "platform": 0, "(idle)": 0, "total": 0}
    assert cells["total"]["total"] == pytest.approx(sum(e.usd for e in HISTORY))
    assert cells["total"]["ml"] == pytest.approx(sum(e.usd for e in HISTORY if e.team == "ml"))


def test_csv_and_json_agree_with_the_table(tmp_path):
    cfg, _ = filled(tmp_path, HISTORY)
    args = ("cost-report", "-c", str(cfg), "--by", "week", "--split", "cloud", "--since", "2026-09-01")
    head, *body = table(ok(*args))
    assert head[:2] == ["week", "from"] and set(head[2:-1]) == {"aws", "gcp", "onprem"}
    from_table = {(r[0], cloud): money(v) for r in body if r[0] != "total" for cloud, v in zip(head[2:-1], r[2:-1])}
    from_csv = {(r["period"], r["cloud"]): float(r["usd"])
                for r in csv.DictReader(io.StringIO(ok(*args, "--format", "csv")))}
    from_json = {(r["period"], r["cloud"]): r["usd"] for r in json.loads(ok(*args, "-o", "json"))}
    assert from_table == from_csv == from_json
    assert from_table[("2026-W40", "aws")] == 40.0 and from_table[("2026-W41", "onprem")] == 6.0
    # the week's first day is in the table as in the CSV
    assert {r[0]: r[1] for r in body}["2026-W41"] == "2026-10-05"


def test_budgets_csv_and_json_agree_with_the_table(tmp_path):
    now = time.time()
    bucket = (now // H) * H
    cfg, _ = filled(tmp_path, [entry(bucket, "aws", 123.45, "j1", "ml", "research")], **BUDGETS)
    head, *body = table(ok("cost-report", "-c", str(cfg), "--budgets"))
    rows = json.loads(ok("cost-report", "-c", str(cfg), "--budgets", "-o", "json"))
    csv_rows = list(csv.DictReader(io.StringIO(ok("cost-report", "-c", str(cfg), "--budgets", "-o", "csv"))))
    assert [r[0].strip() for r in body] == [r["budget"] for r in rows] == [r["budget"] for r in csv_rows]
    for cells, j, c in zip(body, rows, csv_rows):
        assert money(cells[3]) == j["spent"] == float(c["spent"])
        # each made a moment apart: the forecast moves with the clock
        assert money(cells[5]) == pytest.approx(j["forecast"], rel=1e-2) == float(c["forecast"])
        assert cells[6] == j["state"] == c["state"]


# ---- since / until -----------------------------------------------------------------------------------


def test_absolute_since_and_until_take_the_hour_buckets_starting_inside(tmp_path):
    cfg, _ = filled(tmp_path, HISTORY)

    def total(*args: str) -> float:
        return sum(r["usd"] for r in json.loads(ok("cost-report", "-c", str(cfg), "--by", "team", "-o", "json",
                                                   *args)))

    # [Oct 1 00:00, Oct 6 00:00): the first hour of October in, the last of September and Oct 6 out
    assert total("--since", "2026-10-01", "--until", "2026-10-06") == pytest.approx(12.5 + 2.5 + 7 + 6)
    # a zone is honoured: 02:00 at +02:00 is midnight UTC
    assert total("--since", "2026-10-01T02:00+02:00", "--until", "2026-10-06T00:00Z") == pytest.approx(28)
    # one second later and the midnight bucket is out
    assert total("--since", "2026-10-01T00:00:01", "--until", "2026-10-06") == pytest.approx(7 + 6)
    # a month is its first day; --until alone
    assert total("--since", "2026-10") == pytest.approx(12.5 + 2.5 + 7 + 6 + 9 + 1)
    assert total("--until", "2026-09") == pytest.approx(45)
    rows = json.loads(ok("cost-report", "-c", str(cfg), "--by", "day", "-o", "json", "--since", "2026-09-30T12:00",
                         "--until", "2026-10-01T01:00"))
    assert [(r["period"], r["usd"]) for r in rows] == [("2026-09-30", 33.0), ("2026-10-01", 15.0)]


def test_relative_since_and_until_count_back_from_now(tmp_path):
    bucket = (time.time() // H) * H
    recent = [entry(bucket - 1 * H, "aws", 1.0, "a", "ml", "research"),       # an hour ago
              entry(bucket - 23 * H, "gke", 10.0, "b", "platform", "prod"),   # within a day
              entry(bucket - 25 * H, "aws", 100.0, "c", "ml", "research"),    # just over a day
              entry(bucket - 6 * 24 * H, "onprem", 1000.0, "d", "ml", "research"),
              entry(bucket - 15 * 24 * H, "aws", 10000.0, "e", "ml", "research")]
    cfg, _ = filled(tmp_path, recent)

    def total(*args: str) -> float:
        return sum(r["usd"] for r in json.loads(ok("cost-report", "-c", str(cfg), "-o", "json", *args)))

    assert total("--since", "24h") == 11.0
    assert total("--since", "1d") == 11.0
    assert total("--since", "120m") == 1.0
    assert total("--since", "26h") == 111.0
    assert total("--since", "7d") == 1111.0
    assert total("--since", "1w") == 1111.0
    assert total("--since", "3w") == 11111.0
    assert total("--until", "24h") == 11100.0
    assert total("--since", "2w", "--until", "1d") == 1100.0
    head, *body = table(ok("cost-report", "-c", str(cfg), "--since", "24h"))
    assert "to now" in ok("cost-report", "-c", str(cfg), "--since", "24h")
    assert {r[0]: money(r[3]) for r in body} == {"aws": 1.0, "gcp": 10.0, "total": 11.0}


@pytest.mark.parametrize("args, words", [
    (["--since", "yesterday"], ["--since", "ISO 8601", "7d", "'yesterday'"]),
    (["--until", "2026-13-01"], ["--until", "ISO 8601", "24h", "'2026-13-01'"]),
    (["--since", "7x"], ["--since", "90m", "2w"]),
    (["--since", "-3d"], ["--since"]),
    (["--since", "2026-10-05", "--until", "2026-10-01"], ["--until", "after --since"]),
    (["--since", "1d", "--until", "1d"], ["--until", "after --since"]),
    (["--by", "team", "--split", "cloud"], ["--split", "day, week or month"]),
    (["--budgets", "--since", "7d"], ["--budgets", "--since"]),
    (["--budgets", "--by", "month"], ["--budgets", "--by"]),
    (["--by", "day", "--plot", "chart.jpg"], ["--plot", ".png"]),
    (["--by", "day", "--plot", "missing/chart.png"], ["--plot", "missing", "does not exist"]),
    (["--by", "day", "--plot", "."], ["--plot", "directory"]),
    (["--by", "cloud", "--plot", "chart.png"], ["--plot", "--by day, week or month"]),
    (["--since", "99999999999w"], ["--since", "out of range"]),
])
def test_a_bad_option_is_one_line_naming_it_and_exit_2(tmp_path, args, words):
    cfg, _ = filled(tmp_path, HISTORY[:2])
    args = [a if not a.endswith((".png", ".jpg")) and a != "." else str(tmp_path / a) for a in args]
    one_line_error(spillover("cost-report", "-c", str(cfg), *args), *words)
    assert not list(tmp_path.glob("**/*.png")) and not list(tmp_path.glob("*.jpg"))


# ---- on-prem and idle --------------------------------------------------------------------------------


def test_onprem_time_is_labelled_by_cluster_and_idle_is_only_cloud_node_time(tmp_path):
    cfg, _ = filled(tmp_path, HISTORY)
    pools = {r["pool"]: r["usd"] for r in json.loads(ok("cost-report", "-c", str(cfg), "--by", "pool", "-o", "json"))}
    assert pools == {"aws/p4d": pytest.approx(95.0), "gke/a2": 37.0, "onprem (on-prem)": 14.0}
    jobs = {r["job"]: r["usd"] for r in json.loads(ok("cost-report", "-c", str(cfg), "--by", "job", "-o", "json"))}
    assert jobs["(idle)"] == pytest.approx(5 + 2.5 + 1)  # only cloud nodes' unused share
    assert jobs["j4"] == 8.0 and jobs["j7"] == 6.0  # on-prem time is its jobs'
    assert not any("on-prem" in k for k in jobs)
    head, *body = table(ok("cost-report", "-c", str(cfg), "--by", "pool"))
    assert [r[0] for r in body] == ["aws/p4d", "gke/a2", "onprem (on-prem)", "total"]
    assert not any(r[0] == "(idle)" for r in body)


def test_onprem_time_of_no_pool_is_never_called_idle_when_split(tmp_path):
    # on-prem time the ledger could not give a team (its job gone from the store) stays on-prem, not idle
    rows = HISTORY + [entry(at("2026-10-06T05:00"), "onprem", 3.0, "gone")]
    cfg, _ = filled(tmp_path, rows)
    out = json.loads(ok("cost-report", "-c", str(cfg), "--by", "month", "--split", "team", "-o", "json"))
    october = {r["team"]: r["usd"] for r in out if r["period"] == "2026-10"}
    assert october["onprem (on-prem)"] == 3.0 and october["(idle)"] == pytest.approx(3.5)


# ---- budgets -----------------------------------------------------------------------------------------


def test_budget_states_shares_and_forecasts_at_a_given_time(tmp_path):
    config = parse_config({**copy.deepcopy(BASE_CONFIG), **copy.deepcopy(BUDGETS)}, source="test")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    now = at("2026-11-11T00:00")  # 10 of November's 30 days gone
    store.accrue("aws", now, [
        entry(at("2026-11-02T10:00"), "aws", 450.0, "a", "ml", "research"),       # over the aws part (400)
        entry(at("2026-11-09T10:00"), "gke", 300.0, "b", "ml", "research"),
        entry(at("2026-11-10T10:00"), "onprem", 100.0, "c", "ml", "research"),    # on-prem counts (count_onprem)
        entry(at("2026-10-31T23:00"), "aws", 900.0, "d", "ml", "research"),       # last month: not counted
        entry(at("2026-11-10T10:00"), "aws", 30.0),                               # idle: no team's
        entry(at("2026-11-10T12:00"), "gke", 40.0, "p", "platform", "prod"),      # platform's day: Nov 10, not 11
    ])
    report = build_budget_report(config, store, now)
    by = {b.id: b for b in report.lines}
    assert list(by) == ["team:ml", "team:ml:aws", "team:platform", "queue:research", "queue:prod"]
    ml, aws = by["team:ml"], by["team:ml:aws"]
    assert (ml.period, ml.spent, ml.state) == ("2026-11", 850.0, "warning")  # 85% >= warn_at 80%
    assert ml.share == pytest.approx(0.85)
    assert ml.forecast == pytest.approx(850 * 3)  # the rate of 10 days, over 30
    assert (aws.spent, aws.state) == (450.0, "exhausted") and aws.forecast == pytest.approx(450 * 3)
    platform = by["team:platform"]
    assert (platform.period, platform.spent, platform.state, platform.forecast) == ("2026-11-11", 0.0, "ok", 0.0)
    week = by["queue:research"]  # Monday Nov 9 to Sunday Nov 15: 400 spent in 2 of 7 days
    assert (week.period, week.spent, week.state) == ("2026-W46", 400.0, "ok")
    assert week.forecast == pytest.approx(400 * 7 / 2)
    prod = by["queue:prod"]
    assert (prod.period, prod.state, prod.spent) == ("2026-01-01 to 2026-02-01", "closed", 0.0)
    # on a day of the window, it is open
    inside = {b.id: b for b in build_budget_report(config, store, at("2026-01-15T00:00")).lines}
    assert inside["queue:prod"].state == "ok"
    # a budget spent to the cent is exhausted
    store.accrue("aws", now, [entry(at("2026-11-10T11:00"), "gke", 150.0, "e", "ml", "research")])
    assert {b.id: b.state for b in build_budget_report(config, store, now).lines}["team:ml"] == "exhausted"


def test_budgets_table_in_the_open_period_with_sub_rows_per_cloud(tmp_path):
    bucket = (time.time() // H) * H
    cfg, _ = filled(tmp_path, [entry(bucket, "aws", 500.0, "a", "ml", "research"),
                               entry(bucket, "gke", 350.0, "b", "ml", "research"),
                               entry(bucket, "gke", 10.0, "c", "platform", "prod")], **BUDGETS)
    out = ok("cost-report", "-c", str(cfg), "--budgets")
    head, *body = table(out)
    assert head == ["budget", "period", "budget $", "spent $", "share", "forecast $", "state"]
    assert "forecast: the spend at the end of the period" in out
    lines = {r[0].strip(): r for r in body}
    assert [r[0] for r in body][:2] == ["team:ml", "team:ml:aws"] and "│   team:ml:aws" in out  # indented
    month = datetime.fromtimestamp(bucket, timezone.utc).strftime("%Y-%m")
    assert lines["team:ml"][1:5] == [month, "1,000.00", "850.00", "85%"] and lines["team:ml"][6] == "warning"
    assert lines["team:ml:aws"][2:5] == ["400.00", "500.00", "125%"] and lines["team:ml:aws"][6] == "exhausted"
    assert lines["team:platform"][3:5] == ["10.00", "10%"] and lines["team:platform"][6] == "ok"
    assert lines["queue:prod"][6] == "closed"
    for r in body:
        if r[6] != "closed":
            assert money(r[5]) >= money(r[3])  # the forecast never below what is spent


def test_a_config_without_budgets_says_so_in_one_line(tmp_path):
    cfg, _ = filled(tmp_path, HISTORY)
    r = spillover("cost-report", "-c", str(cfg), "--budgets")
    assert r.returncode == 0 and r.stdout.strip().splitlines() == [
        "no budgets in the config (set budget: on a team under teams:, or on a queue)"]
    r = spillover("cost-report", "-c", str(cfg), "--budgets", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == [] and "no budgets" in r.stderr


# ---- the chart ---------------------------------------------------------------------------------------


def test_plot_writes_a_png_of_stacked_bars_per_period_and_split(tmp_path):
    cfg, store = filled(tmp_path, HISTORY)
    png = tmp_path / "spend.png"
    r = spillover("cost-report", "-c", str(cfg), "--by", "month", "--split", "team", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert f"wrote {png}" in r.stderr and "cost by month and team" in r.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # what was drawn: 4 months x 3 teams, stacked, each bar the period's spend of that team
    fig = spend_figure(build_cost_report(store, "month", split="team"))
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == ["ml", "platform", "(idle)"]
    assert [len(c) for c in ax.containers] == [4, 4, 4]
    tops = [sum(c[i].get_height() for c in ax.containers) for i in range(4)]
    assert tops == pytest.approx([45.0, 0.0, 63.0, 38.0])
    assert "$" in ax.get_ylabel() and "month" in ax.get_xlabel() and ax.get_title().startswith("Spend per month")
    # without --split the chart is per cloud; with --json on stdout, stdout stays JSON
    png2 = tmp_path / "weekly.png"
    r = spillover("cost-report", "-c", str(cfg), "--by", "week", "--plot", str(png2), "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout) and png2.read_bytes()[:4] == b"\x89PNG"
    fig = spend_figure(build_cost_report(store, "week", split="cloud"))
    assert {c.get_label() for c in fig.axes[0].containers} == {"aws", "gcp", "onprem"}
    weeks = len(json.loads(r.stdout))
    assert all(len(c) == weeks for c in fig.axes[0].containers) and weeks == 12  # W30 .. W41


# ---- the API -----------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = make_config(store={"url": url}, **copy.deepcopy(BUDGETS))
    store = Store(url)
    bucket = (time.time() // H) * H
    store.accrue("aws", bucket + H, HISTORY + [entry(bucket, "aws", 500.0, "n1", "ml", "research"),
                                               entry(bucket, "gke", 20.0, "n2", "platform", "prod")])
    served = serve(config, store)
    yield served.url, config, store
    served.stop()
    store.close()


def get(url: str, tok: str, path: str, **params) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/{path}", params=params, headers=bearer(tok))


def test_api_cost_by_period_with_split_and_range_and_what_a_submitter_sees(api):
    url, _, store = api
    fin, ml = token(store, "ml", "finance"), token(store, "ml", "submitter")
    rep = get(url, fin, "cost", by="month", split="team", since="2026-09-01", until="2026-11-01").json()
    assert (rep["by"], rep["split"], rep["scope"]) == ("month", "team", "all")
    assert rep["since"] == at("2026-09-01T00:00") and rep["until"] == at("2026-11-01T00:00")
    cells = {(r["period"], r["key"]): r["usd"] for r in rep["rows"]}
    assert cells == {("2026-09", "ml"): 33.0, ("2026-09", "platform"): 30.0, ("2026-09", "(idle)"): 0.0,
                     ("2026-10", "ml"): 12.5, ("2026-10", "platform"): 22.0, ("2026-10", "(idle)"): 3.5}
    assert rep["total_usd"] == pytest.approx(101.0)
    assert {r["start"] for r in rep["rows"]} == {at("2026-09-01T00:00"), at("2026-10-01T00:00")}
    mine = get(url, ml, "cost", by="day", since="2026-09-30", until="2026-10-02").json()
    assert mine["scope"] == "team:ml" and [(r["key"], r["usd"]) for r in mine["rows"]] == [
        ("2026-09-30", 33.0), ("2026-10-01", 12.5)]  # unsplit: a row per period; no idle, no platform
    recent = get(url, fin, "cost", by="team", since="2h").json()
    assert {r["key"]: r["usd"] for r in recent["rows"]} == {"ml": 500.0, "platform": 20.0}
    pools = {r["key"] for r in get(url, fin, "cost", by="pool").json()["rows"]}
    assert pools == {"aws/p4d", "gke/a2", "onprem (on-prem)"}


@pytest.mark.parametrize("params, field", [
    ({"by": "day", "since": "yesterday"}, "query.since"),
    ({"by": "team", "until": "2026-02-30"}, "query.until"),
    ({"since": "2026-10-05", "until": "2026-10-01"}, "query.until"),
    ({"by": "team", "split": "team"}, "query.split"),
    ({"by": "day", "split": "job"}, "query.split"),
    ({"by": "hour"}, "query.by"),
    ({"since": "9" * 99 + "w"}, "query.since"),
])
def test_api_bad_cost_parameters_are_a_problem_naming_the_parameter(api, params, field):
    url, _, store = api
    r = get(url, token(store, "ops", "ops"), "cost", **params)
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
    body = r.json()
    assert [e["field"] for e in body["errors"]] == [field] and body["detail"].startswith(field)


def test_api_budgets_by_role(api):
    url, _, store = api
    every = ["team:ml", "team:ml:aws", "team:platform", "queue:research", "queue:prod"]
    for role in ("finance", "ops", "admin"):
        rep = get(url, token(store, "platform", role), "budgets").json()
        assert rep["scope"] == "all" and [b["id"] for b in rep["lines"]] == every
    ml = get(url, token(store, "ml", "submitter"), "budgets").json()
    assert ml["scope"] == "team:ml" and [b["id"] for b in ml["lines"]] == ["team:ml", "team:ml:aws", "queue:research"]
    lines = {b["id"]: b for b in ml["lines"]}
    assert lines["team:ml:aws"]["spent"] == 500.0 and lines["team:ml:aws"]["state"] == "exhausted"
    line = lines["team:ml"]
    elapsed = ml["at"] - line["start"]
    assert line["forecast"] == pytest.approx(line["spent"] + line["spent"] / elapsed * (line["end"] - ml["at"]))
    platform = get(url, token(store, "platform", "submitter"), "budgets").json()
    assert [b["id"] for b in platform["lines"]] == ["team:platform", "queue:prod"]
    assert get(url, "spo_nope", "budgets").status_code == 401


def test_sdk_and_cli_with_server_match_the_local_reports(api, tmp_path):
    from spillover.client import Client

    url, config, store = api
    fin = token(store, "ml", "finance")
    with Client(url, fin) as c:
        rep = c.cost("week", split="cloud", since=datetime(2026, 9, 28), until=at("2026-10-12T00:00"))
        assert rep == build_cost_report(store, "week", split="cloud", since=at("2026-09-28T00:00"),
                                        until=at("2026-10-12T00:00"))
        assert [b.id for b in c.budgets().lines] == [b.id for b in build_budget_report(config, store, 0.0).lines]
    cfg = tmp_path / "spillover.yaml"
    cfg.write_text(yaml.safe_dump({**copy.deepcopy(BASE_CONFIG), **copy.deepcopy(BUDGETS),
                                   "store": {"url": config.store.url}}))
    for args in (["--by", "month", "--split", "team", "--since", "2026-09"], ["--by", "pool", "-o", "csv"],
                 ["--budgets", "-o", "json"]):
        local = ok("cost-report", "-c", str(cfg), *args)
        remote = ok("cost-report", "--server", url, "--token", fin, *args)
        if "--budgets" in args:  # made a moment apart: the forecasts move with the clock
            local, remote = ([{k: v for k, v in b.items() if k != "forecast"} for b in json.loads(x)]
                             for x in (local, remote))
        assert local == remote, args
    r = spillover("cost-report", "--server", url, "--token", token(store, "ml", "submitter"), "--budgets")
    assert r.returncode == 0 and "queue:prod" not in r.stdout and "team:ml:aws" in r.stdout and "(team:ml)" in r.stdout


def test_the_store_tells_onprem_idle_and_team_less_time_apart_on_both_backends(store_url):
    store = Store(store_url)
    store.accrue("aws", at("2026-10-02T00:00"), HISTORY + [entry(at("2026-10-01T05:00"), "aws", 4.0, "orphan")])
    rows = build_cost_report(store, "team", since=at("2026-09-01T00:00")).rows
    assert {r.key: r.usd for r in rows} == {"ml": 45.5, "platform": 52.0, "(idle)": 3.5, "(none)": 4.0}
    days = build_cost_report(store, "day", split="cloud", since=at("2026-09-30T00:00"), until=at("2026-10-02T00:00"))
    assert [(r.period, r.key, r.usd) for r in days.rows] == [
        ("2026-09-30", "aws", 25.0), ("2026-09-30", "onprem", 8.0),
        ("2026-10-01", "aws", 19.0), ("2026-10-01", "onprem", 0.0)]
    store.close()
