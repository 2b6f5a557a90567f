"""The `spillover` command line: submit and follow jobs, read costs, run the loop, and the embedded demo."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from spillover.scheduler.clock import RealClock
from spillover.scheduler.config import BUNDLED_DATA, EXAMPLE_CONFIG, CloudCluster, SpilloverConfig, load_config
from spillover.scheduler.errors import UserError
from spillover.scheduler.model import JobState


app = typer.Typer(help="Spillover: one global queue for GPU training jobs across on-prem and cloud clusters.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
prices_app = typer.Typer(help="Keep the GPU price catalog current.", no_args_is_help=True)
app.add_typer(prices_app, name="prices")
out = Console()
err = Console(stderr=True)


class ReportBy(str, Enum):
    cloud = "cloud"
    cluster = "cluster"
    pool = "pool"
    queue = "queue"
    team = "team"
    job = "job"
    day = "day"
    week = "week"
    month = "month"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@contextmanager
def user_errors(source: str | None = None) -> Iterator[None]:
    """A user's mistake becomes one line on stderr and exit code 2, never a traceback; so does a server's
    problem answer (with --server), prefixed with `source` when it is about the input."""
    try:
        yield
    except UserError as e:
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except Exception as e:
        client = sys.modules.get("spillover.client")
        if client is None or not isinstance(e, client.ApiError):
            raise
        line = f"{source}: {e}" if source and isinstance(e, client.InvalidRequest | client.TooLarge) else str(e)
        err.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(3 if e.status == 0 or e.status >= 500 else 2) from None


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", envvar="SPILLOVER_CONFIG",
                                                   help="config file (default: ./spillover.yaml)")]


def _config(path: Path | None) -> SpilloverConfig:
    if path is None:
        path = Path("spillover.yaml")
        if not path.exists():
            raise UserError("no config: pass --config FILE or set SPILLOVER_CONFIG "
                            f"(a commented example: {EXAMPLE_CONFIG})")
    return load_config(path)


def _store(config: SpilloverConfig):
    from spillover.scheduler.store import Store

    return Store(config.store.url)


def _ts(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    h, rem = divmod(int(round(seconds)), 3600)
    return f"{h}h{rem // 60:02d}m"


# ---- config ------------------------------------------------------------------------------------------


@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="config file to check")]) -> None:
    """Check a config file; print every error with its field path."""
    try:
        cfg = load_config(file)
    except UserError as e:
        errors = getattr(e, "errors", None) or [str(e)]
        for line in errors:
            err.print(f"error: {file}: {line}" if not line.startswith(str(file)) else f"error: {line}",
                      markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    gpus = sum(c.total_gpus for c in cfg.clusters if not isinstance(c, CloudCluster))
    pools = sum(len(c.pools) for c in cfg.clusters if isinstance(c, CloudCluster))
    out.print(f"{file}: ok — {len(cfg.clusters)} clusters ({gpus} on-prem GPUs, {pools} cloud pools), "
              f"{len(cfg.queues)} queues")


# ---- prices ------------------------------------------------------------------------------------------


@prices_app.command("refresh")
def prices_refresh(
    cloud: Annotated[Optional[list[str]], typer.Option(
        "--cloud", metavar="CLOUD", help="aws, gcp or azure; repeat for several (default: all three)")] = None,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", metavar="FILE",
        help="catalog to write (default: the config's prices.catalog, else ~/.spillover/gpu_instances.csv)")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", envvar="SPILLOVER_CONFIG", metavar="FILE",
        help="config whose prices.catalog is read and written")] = None,
    aws_endpoint: Annotated[Optional[str], typer.Option(
        envvar="SPILLOVER_AWS_ENDPOINT", metavar="URL", help="endpoint URL for the Price List and EC2 APIs")] = None,
    azure_url: Annotated[Optional[str], typer.Option(
        envvar="SPILLOVER_AZURE_PRICES_URL", metavar="URL", help="Retail Prices API URL")] = None,
    gcp_url: Annotated[Optional[str], typer.Option(
        envvar="SPILLOVER_GCP_BILLING_URL", metavar="URL", help="Cloud Billing API base URL")] = None,
    gcp_api_key: Annotated[Optional[str], typer.Option(
        envvar="SPILLOVER_GCP_API_KEY", metavar="KEY", show_default=False,
        help="API key instead of Application Default Credentials")] = None,
) -> None:
    """Re-price the catalog's rows from the AWS, GCP and Azure price APIs; a cloud that fails keeps its rows."""
    from spillover.scheduler.prices_refresh import Endpoints, refresh_command

    with user_errors():
        endpoints = Endpoints(aws=aws_endpoint, azure=azure_url, gcp=gcp_url, gcp_api_key=gcp_api_key)
        code = refresh_command(cloud, out_file, config, endpoints, out, err)
    if code:
        raise typer.Exit(code)


# ---- jobs --------------------------------------------------------------------------------------------


ServerOpt = Annotated[Optional[str], typer.Option(
    "--server", envvar="SPILLOVER_SERVER", metavar="URL",
    help="talk to a `spillover serve` at URL (default: the config's store, directly)")]
TokenOpt = Annotated[Optional[str], typer.Option(
    "--token", envvar="SPILLOVER_TOKEN", metavar="TOKEN", show_default=False,
    help="bearer token for --server (from `spillover token create`)")]


def _client(server: str, token: str | None):
    from spillover.client import Client

    return Client(server, token)


@app.command()
def submit(file: Annotated[str, typer.Argument(metavar="FILE",
                                               help="TrainingJob YAML or a batch/v1 Job manifest; - reads stdin")],
           config: ConfigOpt = None, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Add the job(s) in FILE to the global queue (all of them or none)."""
    from spillover.scheduler.api_models import JobOut
    from spillover.scheduler.intake import (DEFAULT_MAX_BYTES, check_against_config, load_job_file, read_job_file,
                                            submit_specs)

    source = "<stdin>" if file == "-" else file
    with user_errors(source):
        if server:
            limit = _config(config).api.max_body_bytes if config else DEFAULT_MAX_BYTES
            jobs = _client(server, token).submit(read_job_file(file, limit))
        else:
            cfg = _config(config)
            specs = load_job_file(file, cfg.api.max_body_bytes)
            check_against_config(specs, cfg, source)
            jobs = [JobOut.of(j) for j in submit_specs(_store(cfg), cfg, specs, now=RealClock().now())]
        for j in jobs:
            out.print(f"submitted {j.id} to queue {j.queue} ({j.gpus} GPU(s))")


@app.command()
def jobs(config: ConfigOpt = None,
         state: Annotated[Optional[list[JobState]], typer.Option(help="only these states")] = None,
         queue: Annotated[Optional[str], typer.Option(help="only this queue")] = None,
         limit: Annotated[int, typer.Option(help="at most this many, newest first", min=1)] = 50,
         server: ServerOpt = None, token: TokenOpt = None) -> None:
    """List jobs: state, where each runs and why it is there."""
    from spillover.scheduler.api_models import JobOut

    with user_errors():
        if server:
            rows = list(_client(server, token).jobs(state=state, queue=queue, page_size=min(limit, 1000), limit=limit))
        else:
            rows = [JobOut.of(j) for j in _store(_config(config)).jobs_page(states=state, queue=queue, limit=limit)]
        _print_jobs(rows[::-1])  # oldest of them first, the newest at the bottom


def _print_jobs(rows) -> None:
    table = Table(title=f"jobs ({len(rows)} shown; `spillover describe JOB` for the full story)")
    now = RealClock().now()
    cells = []
    for j in rows:
        where = f"{j.cluster}/{j.pool}" if j.pool else (j.cluster or "-")
        waited = None if j.state == JobState.CANCELLED else (j.started_at or now) - j.submitted_at
        starts = "-"
        if j.state == JobState.PENDING:
            starts = (f"~{_dur(max(0.0, j.est_start_at - now))} {j.est_place}" if j.est_start_at is not None
                      else "unknown") + (f" ({j.pending})" if j.pending else "")
        cells.append([j.id, j.queue, str(j.gpus), j.state.value, where, _dur(waited), starts, j.reason])
    heads = ["job", "queue", "GPUs", "state", "where", "waited", "starts"]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    # the fixed columns keep their width; the reason gets the rest of the line, cut with an ellipsis
    why_width = max(12, out.width - sum(widths) - 3 * (len(heads) + 1) - 1)
    for h, w in zip(heads, widths):
        table.add_column(h, min_width=w, no_wrap=True, justify="right" if h in ("GPUs", "waited") else "left")
    narrow = why_width < 20  # too little room for a useful reason: leave it to `describe`
    if not narrow:
        table.add_column("why", no_wrap=True, overflow="ellipsis", max_width=why_width)
    for c in cells:
        table.add_row(*(c[:-1] if narrow else c))
    out.print(table)


@app.command()
def describe(job: Annotated[str, typer.Argument(help="job id or name")], config: ConfigOpt = None,
             server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Show a job's spec, where it ran, why, and every event."""
    from spillover.scheduler.api_models import JobDetail
    from spillover.scheduler.jobspec import job_spec_to_yaml

    with user_errors():
        if server:
            d = _client(server, token).job(job)
        else:
            store = _store(_config(config))
            found = store.job(job)
            d = JobDetail.of(found, store.events(found.id))
        j = d.job
        out.print(f"[bold]{j.id}[/bold]  queue={j.queue} team={j.team} state={j.state.value}")
        out.print(f"where: {j.cluster or '-'}{'/' + j.pool if j.pool else ''}  gpu type: {j.gpu_type or '-'}")
        out.print(f"why: {j.reason}", markup=False)
        if j.state == JobState.PENDING:
            held = f"; held back by {j.pending}" if j.pending else ""
            when = (f"{_ts(j.est_start_at)} on {j.est_place}" if j.est_start_at is not None
                    else "unknown (no forecast has it starting)")
            out.print(f"expected start: {when}{held}", markup=False)
        if j.progress:
            out.print(f"progress: {j.progress:.0%} done before it was stopped; it resumes from its checkpoint")
        out.print(f"submitted {_ts(j.submitted_at)}  started {_ts(j.started_at)}  finished {_ts(j.finished_at)}")
        table = Table(title="events")
        for col in ("time", "kind", "state", "message"):
            table.add_column(col, overflow="fold")
        for e in d.events:
            states = f"{e.from_state or ''}→{e.to_state}" if e.to_state else ""
            table.add_row(_ts(e.at), e.kind, states, e.message)
        out.print(table)
        out.print("spec:")
        out.print(job_spec_to_yaml(j.spec), markup=False, highlight=False)


@app.command()
def cancel(job: Annotated[str, typer.Argument(help="job id or name")], config: ConfigOpt = None,
           server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Cancel a job: a queued one at once, a dispatched one once its cluster has removed it."""
    from spillover.scheduler.intake import cancel_job

    with user_errors():
        if server:
            message = _client(server, token).cancel(job).message
        else:
            message = cancel_job(_store(_config(config)), job, now=RealClock().now()).message
        out.print(message)


@app.command()
def clusters(config: ConfigOpt = None, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Member clusters and pools: capacity, price, and what the loop last saw."""
    from spillover.scheduler.api_models import cluster_overview

    with user_errors():
        if server:
            rows = _client(server, token).clusters()
        else:
            cfg = _config(config)
            store = _store(cfg)
            rows = cluster_overview(cfg, store.cluster_statuses(), store.pool_statuses(), RealClock().now())
        table = Table(title="clusters")
        for col in ("cluster", "pool", "instance", "GPU", "GPUs", "$/node-h", "nodes", "status"):
            table.add_column(col, overflow="fold")
        for c in rows:
            status = "ok" if c.available else f"unavailable: {c.message}"
            if not c.observed:
                status = "not observed yet"
            status += _signals_text(c.signals)
            for p in c.pools:
                table.add_row(c.name, p.name, p.instance_type + (" (spot)" if p.spot else ""), p.gpu_type,
                              f"{p.gpus_per_node}/node", f"{p.price_per_hour:.2f}", f"{p.min_nodes}-{p.max_nodes}",
                              f"cooling off: {p.message}" if p.cooling_off else status)
            for g in c.node_groups:
                table.add_row(c.name, "-", "on-prem", g.gpu_type, str(g.count * g.gpus_per_node),
                              f"{g.gpu_hour_cost * g.gpus_per_node:.2f}", str(g.count), status)
        out.print(table)


def _signals_text(signals: dict[str, float]) -> str:
    parts = []
    if "gpu_utilization_avg" in signals:
        parts.append(f"GPU util {signals['gpu_utilization_avg']:.0f}%")
    if "pending_gpu_pods" in signals:
        parts.append(f"{signals['pending_gpu_pods']:.0f} pending GPU pods")
    if signals.get("idle_allocated_gpus"):
        parts.append(f"{signals['idle_allocated_gpus']:.0f} GPUs allocated but idle")
    parts += [f"{k} {v:g}" for k, v in signals.items()
              if k not in ("gpu_utilization_avg", "pending_gpu_pods", "idle_allocated_gpus")]
    return f"; {', '.join(parts)}" if parts else ""


class SplitBy(str, Enum):
    cloud = "cloud"
    team = "team"
    queue = "queue"


@app.command("cost-report")
def cost_report_cmd(
        config: ConfigOpt = None,
        by: Annotated[ReportBy, typer.Option(help="group costs by a ledger key, or by UTC day, week (from Monday) "
                                             "or month")] = ReportBy.cloud,
        split: Annotated[Optional[SplitBy], typer.Option(help="with --by day|week|month: a column per cloud, team "
                                                         "or queue")] = None,
        since: Annotated[Optional[str], typer.Option(
            metavar="WHEN", help="from this time on: ISO 8601 (UTC without a zone), YYYY-MM, or back from now: 90m, "
                                 "24h, 7d, 2w")] = None,
        until: Annotated[Optional[str], typer.Option(metavar="WHEN", help="before this time (as --since)")] = None,
        budgets: Annotated[bool, typer.Option("--budgets", help="each budget line against its spend in the period "
                                              "open now, with the forecast for the period's end")] = False,
        plot: Annotated[Optional[Path], typer.Option(
            metavar="FILE.png", help="also draw spend per period (--by day|week|month) as stacked bars per --split "
                                     "(default cloud)")] = None,
        fmt: Annotated[Format, typer.Option("--format", "-o", help="output format")] = Format.table,
        server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Dollars, node-hours and GPU-hours from the cost ledger: grouped, over time, or against budgets."""
    from spillover.scheduler.cost_views import ReportSource, cost_report_command

    with user_errors():
        source = ReportSource(client=(lambda: _client(server, token)) if server else None,
                              config=lambda: _config(config), store=lambda: _store(_config(config)))
        cost_report_command(source, by=by.value, split=split.value if split else None, since=since, until=until,
                            budgets=budgets, by_given=by != ReportBy.cloud, plot=plot, fmt=fmt.value,
                            now=RealClock().now(), out=out, err=err)


def print_cost_report(store, by: str, fmt: str, title: str | None = None) -> None:
    from spillover.scheduler.cost_views import build_cost_report, render_cost

    render_cost(build_cost_report(store, by), fmt, out, title)


# ---- the API -----------------------------------------------------------------------------------------


@app.command()
def serve(config: ConfigOpt = None,
          host: Annotated[Optional[str], typer.Option(help="address to listen on (default: api.host)")] = None,
          port: Annotated[Optional[int], typer.Option(help="port (default: api.port; 0: any free port)",
                                                      min=0, max=65535)] = None,
          log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
          access_log: Annotated[bool, typer.Option(help="log every request line")] = True) -> None:
    """Serve the HTTP API (/api/v1, /openapi.json, /healthz, /readyz) under uvicorn."""
    import uvicorn

    from spillover.scheduler.api import create_app

    if log_level not in ("debug", "info", "warning", "error"):
        with user_errors():
            raise UserError(f"--log-level: must be debug, info, warning or error (got {log_level!r})")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with user_errors():
        cfg = _config(config)
        api = create_app(cfg, _store(cfg))
    uvicorn.run(api, host=host or cfg.api.host, port=cfg.api.port if port is None else port, log_level=log_level,
                access_log=access_log)


token_app = typer.Typer(help="Bearer tokens of the HTTP API (these talk to the store directly).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


class Role(str, Enum):
    submitter = "submitter"
    ops = "ops"
    finance = "finance"
    admin = "admin"


@token_app.command("create")
def token_create(team: Annotated[str, typer.Option(help="the team the token acts for")],
                 role: Annotated[Role, typer.Option(help="submitter, ops, finance or admin")],
                 name: Annotated[str, typer.Option(help="what it is for, e.g. ci-bot")],
                 config: ConfigOpt = None) -> None:
    """Create a token and print it once (stdout holds only the token); the store keeps its SHA-256."""
    from spillover.scheduler.auth import create_token
    from spillover.scheduler.intake import teams_of

    with user_errors():
        cfg = _config(config)
        teams = sorted(set(teams_of(cfg).values()))
        if role in (Role.submitter, Role.finance) and team not in teams:
            raise UserError(f"--team: unknown team {team!r}; teams of the configured queues: {', '.join(teams)}")
        info, secret = create_token(_store(cfg), team=team, role=role.value, name=name, now=RealClock().now())
    err.print(f"created token {info.id} ({info.name}: team {info.team}, role {info.role}); it is shown only now",
              markup=False, highlight=False)
    sys.stdout.write(secret + "\n")


@token_app.command("list")
def token_list(config: ConfigOpt = None) -> None:
    """Every token's id, name, team, role and dates (never the tokens)."""
    from spillover.scheduler.auth import list_tokens

    with user_errors():
        tokens = list_tokens(_store(_config(config)))
    table = Table(title=f"tokens ({len(tokens)})")
    for col in ("id", "name", "team", "role", "created", "revoked"):
        table.add_column(col)
    for t in tokens:
        table.add_row(t.id, t.name, t.team, t.role, _ts(t.created_at), _ts(t.revoked_at))
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(metavar="ID", help="the token's id (token list)")],
                 config: ConfigOpt = None) -> None:
    """Revoke a token: the API refuses it from its next request on."""
    from spillover.scheduler.auth import revoke_token

    with user_errors():
        t = revoke_token(_store(_config(config)), token_id, now=RealClock().now())
    out.print(f"revoked {t.id} ({t.name}, team {t.team}, role {t.role})")


# ---- the loop ----------------------------------------------------------------------------------------


@app.command()
def run(config: ConfigOpt = None,
        once: Annotated[bool, typer.Option(help="run one cycle and exit")] = False,
        cycles: Annotated[Optional[int], typer.Option(help="stop after this many cycles")] = None,
        state_dir: Annotated[Path, typer.Option(help="where simulated clusters keep their state")] = Path(".spillover/sim"),
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
        metrics_port: Annotated[Optional[int], typer.Option(
            "--metrics-port", min=0, max=65535, help="serve Prometheus metrics on this port (/metrics)")] = None,
        metrics_host: Annotated[str, typer.Option(
            "--metrics-host", help="address the metrics server listens on")] = "127.0.0.1",
        lock_poll_s: Annotated[float, typer.Option(
            "--lock-poll-s", min=0.05, help="how often a follower tries to take the lead (seconds)")] = 0.5) -> None:
    """Run the control loop in the foreground on the configured clusters. Any number may run on one store: one
    leads and acts, the others follow and take over when it stops (--once runs only when no other loop leads)."""
    from spillover.scheduler.leader import leadership_for, run_as_leader
    from spillover.scheduler.loop import ControlLoop
    from spillover.scheduler.wiring import build_providers

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("spillover.leader").setLevel(logging.INFO)  # who leads is always worth a line
    with user_errors():
        cfg = _config(config)
        store = _store(cfg)
        clock = RealClock()
        metrics = _serve_metrics(metrics_host, metrics_port) if metrics_port is not None else None

        def start(_epoch: int) -> ControlLoop:
            # only the leader builds providers and loads the working state, afresh at each lead: a follower
            # never touches a cluster, and a new leader knows only what the store says
            return ControlLoop(cfg, store, build_providers(cfg, clock, state_dir=state_dir), clock,
                               crash_hook=_crash_hook_from_env(), metrics=metrics)

        safe_url = store.engine.url.render_as_string(hide_password=True)
        out.print(f"spillover: {len(cfg.clusters)} clusters, cycle every {cfg.loop.interval_s:g}s, store {safe_url}",
                  markup=False, highlight=False, soft_wrap=True)
        # Kubernetes stops a pod with SIGTERM: stop as on Ctrl-C, so the ledger is written up and the lock let go
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            leader = leadership_for(store, poll_s=lock_poll_s)
            run_as_leader(metrics.watch_leader(leader) if metrics else leader, start,
                          max_cycles=1 if once else cycles, wait=not once)
        except KeyboardInterrupt:
            out.print("stopped")


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _serve_metrics(host: str, port: int):
    """The loop's metrics, served from a thread before the first cycle (port 0: any free port, printed)."""
    from spillover.scheduler.metrics import LoopMetrics

    metrics = LoopMetrics()
    try:
        server, _thread = metrics.serve(port, host)
    except OSError as e:
        raise UserError(f"--metrics-port: cannot listen on {host}:{port}: {e.strerror or e}") from None
    out.print(f"spillover: metrics on http://{host}:{server.server_port}/metrics", highlight=False)
    return metrics


def _crash_hook_from_env():
    """SPILLOVER_CRASH_AT=point:n kills the process (SIGKILL) the n-th time the loop reaches `point`.

    Used by the crash tests to stop the process exactly between writing an intent and acting on it.
    """
    spec = os.environ.get("SPILLOVER_CRASH_AT")
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    count = {"n": 0}

    def hook(at: str) -> None:
        if at == point:
            count["n"] += 1
            if count["n"] >= int(nth or 1):
                os.kill(os.getpid(), 9)

    return hook


# ---- simulate ----------------------------------------------------------------------------------------

REFERENCE_CONFIG = BUNDLED_DATA / "simulate" / "reference.yaml"


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


@app.command()
def simulate(
    workload: Annotated[Path, typer.Option("--workload", "-w", metavar="FILE",
                                           help="canonical CSV or a trace: Philly, Helios, Alibaba PAI / GPU 2023")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", metavar="FILE",
                                                   help="clusters and policy (default: the reference setting)")] = None,
    policy: Annotated[Optional[list[str]], typer.Option(
        "--policy", "-p", metavar="P",
        help="spillover (value of time per GPU-hour), spillover-job (per job-hour), no-wait, constant-wait, "
             "compute-wait, onprem-only; repeat or comma-separate (default: all but spillover-job)")] = None,
    sweep: Annotated[Optional[list[str]], typer.Option(
        "--sweep", metavar="KNOB=v1,v2", help="value_of_time (spillover), value_of_job_time (spillover-job), "
                                              "wait_h (constant-wait), k (compute-wait)")] = None,
    queue: Annotated[Optional[list[str]], typer.Option(
        "--queue", metavar="Q", help="the baselines' on-prem queue: fifo (with skipping), easy (backfill); default easy")] = None,
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="where results go")] = Path("simulate-out"),
    fmt: Annotated[str, typer.Option("--format", help="workload format (default: detected)")] = "auto",
    strict: Annotated[bool, typer.Option("--strict/--skip-bad", help="reject the workload at its first bad row, or "
                                         "skip bad rows and report them")] = False,
    limit: Annotated[Optional[int], typer.Option(help="replay only the first N jobs", min=1)] = None,
    estimate_error: Annotated[Optional[float], typer.Option(
        help="runtime estimates off by up to this fraction (0.5: +-50%); true runtimes unchanged", min=0.0, max=0.95)] = None,
    seed: Annotated[int, typer.Option(help="seed of the estimate errors")] = 0,
) -> None:
    """Replay a workload through the real loop under Spillover and the baseline burst rules; write results and a
    Pareto plot of cloud cost against average job completion time."""
    from spillover.simulations.simulate import parse_sweeps, plan_runs, run_one, write_results
    from spillover.simulations.team_report import team_table
    from spillover.simulations.workloads import load_workload, to_arrivals

    with user_errors():
        cfg = load_config(config or REFERENCE_CONFIG)
        runs = plan_runs(_split(policy) or ["spillover", "no-wait", "constant-wait", "compute-wait", "onprem-only"],
                         parse_sweeps(list(sweep or ())), _split(queue) or ["easy"], cfg)
        jobs, report = load_workload(workload, fmt, strict=strict)
        err.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
        if limit is not None:
            jobs = jobs[:limit]
        if not jobs:
            raise UserError(f"{workload}: no jobs to replay")
        replay = to_arrivals(jobs, estimate_error=estimate_error, seed=seed)
        onprem = sum(c.total_gpus for c in cfg.clusters if not isinstance(c, CloudCluster))
        out.print(f"replaying {len(replay.arrivals):,} jobs on {onprem} on-prem GPUs, {len(runs)} run(s)"
                  + (f", estimates off by up to {estimate_error:.0%}" if estimate_error else ""))
        results = []
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=out) as bar:
            overall = bar.add_task("runs", total=len(runs))
            for spec in runs:
                task = bar.add_task(f"  {spec.label}", total=len(replay.arrivals))

                def progress(sim_s: float, done: int, _submitted: int, task=task) -> None:
                    bar.update(task, completed=done)

                m = run_one(cfg, replay, spec, estimates_exact=not estimate_error, progress=progress)
                bar.remove_task(task)
                bar.advance(overall)
                results.append(m)
                out.print(f"{spec.label:<32} cloud {m.cloud_gpu_hours:>10,.0f} GPU-h  ${m.cloud_usd:>11,.0f}  "
                          f"JCT avg {m.jct_avg_h:6.2f} h p99 {m.jct_p99_h:7.1f} h  wait {m.wait_avg_h:5.2f} h  "
                          f"on-prem {m.onprem_utilization:4.0%}  ({m.wall_s:.0f} s)", markup=False, highlight=False)
        for m in results:
            if m.teams:
                out.print(team_table(m))
        title = (f"{workload.name}: {len(replay.arrivals):,} jobs, {onprem} on-prem GPUs"
                 + (f", estimates +-{estimate_error:.0%}" if estimate_error else ""))
        files = write_results(out_dir, results, title=title)
        out.print(f"lower bound on cloud GPU-hours: {results[0].lower_bound_cloud_gpu_hours:,.0f}; wrote "
                  + ", ".join(str(f) for f in files))


# ---- demo --------------------------------------------------------------------------------------------


@app.command()
def demo(jobs: Annotated[int, typer.Option("--jobs", help="jobs in the burst")] = 240,
         seed: Annotated[int, typer.Option(help="workload seed")] = 7,
         config: Annotated[Optional[Path], typer.Option("--config", "-c",
                                                        help="config (default: the bundled example)")] = None,
         keep: Annotated[Optional[Path], typer.Option(help="keep the demo's store in this SQLite file")] = None) -> None:
    """Replay a burst of jobs on simulated clusters: where they ran, why, and what the cloud cost."""
    from spillover.simulations.demo import placement_summary, run_demo

    with user_errors():
        cfg = load_config(config or EXAMPLE_CONFIG)
        db = keep or Path(tempfile.mkdtemp(prefix="spillover-demo-")) / "demo.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)
        onprem = sum(c.total_gpus for c in cfg.clusters if not isinstance(c, CloudCluster))
        out.print(f"[bold]Spillover demo[/bold]: {jobs} jobs arrive over 3 h; {onprem} on-prem GPUs; "
                  f"cloud pools on {', '.join(sorted({str(getattr(c.cloud, 'value', c.cloud)) for c in cfg.clusters if isinstance(c, CloudCluster)}))}; "
                  f"waiting is worth ${cfg.policy.value_of_time_per_gpu_hour:g}/GPU-hour")
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} jobs done"), TimeElapsedColumn(),
                      console=out, transient=False) as bar:
            task = bar.add_task("simulated 0.0 h", total=jobs)

            def progress(sim_s: float, done: int, _submitted: int) -> None:
                bar.update(task, completed=done, description=f"simulated {sim_s / 3600:5.1f} h")

            store, result = run_demo(cfg, db, n_jobs=jobs, seed=seed, progress=progress)
        rows = placement_summary(store, cfg)
        table = Table(title="Where jobs ran")
        for col in ("where", "kind", "jobs", "GPU-h", "avg wait"):
            table.add_column(col, justify="right" if col in ("jobs", "GPU-h", "avg wait") else "left")
        for r in rows:
            table.add_row(r.where, r.kind, str(r.jobs), f"{r.gpu_hours:,.0f}", f"{r.avg_wait_h:.2f} h")
        out.print(table)
        out.print("[bold]Why[/bold] (for each place, the reason given to the job that waited longest there):")
        for r in rows:
            out.print(f"  {r.where}: {r.example_reason}", markup=False, highlight=False)
        print_cost_report(store, "cloud", "table", title="Cost by cloud (node-hours incl. boot and idle)")
        scale = [e.message for e in store.events() if e.kind == "scale"]
        ups = sum(1 for m in scale if "scaled up" in m)
        downs = sum(1 for m in scale if "scaled down" in m)
        above = [f"{pid} has {n} (min {m})" for pid, (n, m) in result.pools_at_end.items() if n > m]
        counts = store.count_by_state()
        out.print(f"{counts.get(JobState.SUCCEEDED, 0)}/{jobs} jobs succeeded in "
                  f"{(result.ended_at - result.started_at) / 3600:.1f} simulated hours; {ups} scale-ups, "
                  f"{downs} scale-downs; {result.solves} solves took {result.solve_s:.1f} s.")
        out.print("Every cloud pool is back at its minimum size." if not above
                  else f"Pools still above their minimum: {', '.join(above)}")
        if keep:
            cfg_path = _write_demo_config(config or EXAMPLE_CONFIG, db)
            out.print(f"Store kept: try `spillover jobs -c {cfg_path}` or `spillover describe JOB -c {cfg_path}`")


def _write_demo_config(source: Path, db: Path) -> Path:
    """A copy of the demo's config pointing at the kept store, so the other commands can read it."""
    import yaml

    data = yaml.safe_load(source.read_text())
    data.setdefault("store", {})["url"] = f"sqlite:///{db.resolve()}"
    path = db.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


if __name__ == "__main__":
    app()
