"""`spillover prices refresh`: re-price the catalog's rows from the clouds' price APIs, replace the file atomically."""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spillover.providers.catalog import BUNDLED_CATALOG, COLUMNS, PriceCatalog
from spillover.providers.prices.common import FetchResult, PriceFetchError, RowSpec, redact
from spillover.scheduler.errors import ConfigError, UserError, unknown_name_message
from spillover.scheduler.jobspec import read_text, read_yaml_documents

CLOUDS = ("aws", "gcp", "azure")
DEFAULT_OUT = Path("~/.spillover/gpu_instances.csv")
_SHOWN_CHANGES = 8


class RefreshError(UserError):
    """The refreshed catalog could not be written; the previous file is left as it was."""

    exit_code = 1


@dataclass(frozen=True)
class Endpoints:
    """Where each cloud's price API is reached (None: the public API), and GCP's API key if one is used."""

    aws: str | None = None
    azure: str | None = None
    gcp: str | None = None
    gcp_api_key: str | None = None


@dataclass(frozen=True)
class Change:
    cloud: str
    region: str
    instance_type: str
    price: str  # "on-demand" or "spot"
    old: float | None
    new: float

    @property
    def relative(self) -> float:
        return math.inf if not self.old else (self.new - self.old) / self.old


@dataclass
class CloudReport:
    """What a refresh did to one cloud's rows."""

    cloud: str
    rows: int = 0
    refreshed: int = 0
    unchanged: int = 0
    kept_old: int = 0
    requests: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


@dataclass
class RefreshReport:
    source: Path
    out: Path
    clouds: list[CloudReport]
    written: bool = False

    @property
    def all_failed(self) -> bool:
        tried = [c for c in self.clouds if c.rows]
        return bool(tried) and all(c.error is not None for c in tried)


Fetcher = Callable[[Sequence[RowSpec], Endpoints], FetchResult]


def _fetchers() -> dict[str, Fetcher]:
    # imported here: boto3 and google-auth take a while to import and only this command needs them
    from spillover.providers.prices import aws, azure, gcp

    return {
        "aws": lambda rows, ep: aws.fetch(rows, endpoint_url=ep.aws),
        "gcp": lambda rows, ep: gcp.fetch(rows, base_url=ep.gcp, api_key=ep.gcp_api_key),
        "azure": lambda rows, ep: azure.fetch(rows, base_url=ep.azure),
    }


def parse_clouds(values: Sequence[str] | None) -> list[str]:
    """The clouds asked for, in catalog order; all three when none is named."""
    if not values:
        return list(CLOUDS)
    asked = [v.strip().lower() for value in values for v in value.split(",") if v.strip()]
    for name in asked:
        if name not in CLOUDS:
            raise UserError(unknown_name_message("cloud", name, CLOUDS, "valid clouds"))
    return [c for c in CLOUDS if c in asked]


def configured_catalog(config: Path) -> Path | None:
    """prices.catalog of a config file, resolved like the config does; None when unset.

    Only this key is read: a config that no longer validates against stale prices must still be refreshable.
    """
    try:
        docs = read_yaml_documents(read_text(config))
    except ValueError as exc:
        raise ConfigError(str(config), [str(exc)]) from None
    data = docs[0] if len(docs) == 1 else None
    prices = data.get("prices") if isinstance(data, Mapping) else None
    path = prices.get("catalog") if isinstance(prices, Mapping) else None
    if path is None:
        return None
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(str(config), ["prices.catalog: must be the path of a CSV file"])
    return config.parent / Path(path).expanduser()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def resolve_paths(config: Path | None, out: Path | None) -> tuple[Path, Path]:
    """(catalog to read, file to write): the config's catalog, else --out, else the bundled one is read."""
    configured = configured_catalog(config) if config is not None else None
    if configured is not None and configured.is_file():
        source = configured
    elif out is not None and out.is_file():
        source = out
    else:
        source = BUNDLED_CATALOG
    target = out if out is not None else configured if configured is not None else DEFAULT_OUT.expanduser()
    if target.is_dir():
        raise UserError(f"--out {target}: is a directory; name the CSV file to write")
    if out is None and _same_file(target, BUNDLED_CATALOG):
        raise UserError(f"prices.catalog in {config} is the bundled catalog {BUNDLED_CATALOG}; refreshing "
                        f"never overwrites it unless --out names it, so pass --out {BUNDLED_CATALOG} "
                        "or point prices.catalog at a file of your own")
    return source, target


def read_rows(path: Path) -> list[dict[str, str]]:
    """The catalog's rows as written, after PriceCatalog.load has accepted the file."""
    try:
        PriceCatalog.load(path)
    except ValueError as exc:
        hint = "" if _same_file(path, BUNDLED_CATALOG) else "; fix it, or remove it to start from the bundled catalog"
        raise UserError(f"{exc}{hint}") from None
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def _spec(row: Mapping[str, str]) -> RowSpec:
    return RowSpec(region=row["region"].strip(), instance_type=row["instance_type"].strip(),
                   gpu_type=row["gpu_type"].strip(), gpus=int(row["gpus"]), vcpus=int(row["vcpus"]),
                   memory_gib=float(row["memory_gib"]))


def format_price(value: float) -> str:
    """At most 6 decimals, at least 2: 55.04, 0.2104, 3.00."""
    text = f"{value:.6f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def _price(text: str) -> float | None:
    return float(text) if text.strip() else None


def _fetch_all(rows_by_cloud: Mapping[str, list[RowSpec]], endpoints: Endpoints,
               fetchers: Mapping[str, Fetcher]) -> dict[str, FetchResult | str]:
    """Each cloud's result, or its one-line error; the clouds are asked at the same time."""
    secrets = [endpoints.gcp_api_key]

    def one(cloud: str) -> FetchResult | str:
        try:
            return fetchers[cloud](rows_by_cloud[cloud], endpoints)
        except PriceFetchError as exc:
            return redact(str(exc), secrets)
        except Exception as exc:  # noqa: BLE001 - a fetcher's bug must not lose the other clouds' prices
            return redact(f"unexpected: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", secrets)

    asked = [c for c, rows in rows_by_cloud.items() if rows]
    with ThreadPoolExecutor(max_workers=max(1, len(asked))) as pool:
        return dict(zip(asked, pool.map(one, asked)))


def _merge(cloud: str, rows: list[dict[str, str]], result: FetchResult, report: CloudReport) -> None:
    """Write the fetched prices into this cloud's rows; a row the API does not price keeps its old ones."""
    for row in rows:
        spec = _spec(row)
        where = f"{spec.instance_type} in {spec.region}"
        quote = result.quotes.get(spec.key)
        if quote is None:
            report.kept_old += 1
            reason = result.reasons.get(spec.key, "not listed by the API")
            report.warnings.append(f"{where}: {reason}; kept the previous price")
            continue
        old_on_demand, old_spot = float(row["on_demand_usd_per_hour"]), _price(row["spot_usd_per_hour"])
        spot = quote.spot
        if spot is None:
            spot = old_spot
            if old_spot is not None and spec.key not in result.spot_unread:
                report.warnings.append(f"{where}: no spot price listed; kept the previous spot price")
        changed = False
        if not math.isclose(quote.on_demand, old_on_demand, rel_tol=1e-9, abs_tol=1e-9):
            row["on_demand_usd_per_hour"] = format_price(quote.on_demand)
            report.changes.append(Change(cloud, spec.region, spec.instance_type, "on-demand", old_on_demand,
                                         quote.on_demand))
            changed = True
        if spot is not None and (old_spot is None or not math.isclose(spot, old_spot, rel_tol=1e-9, abs_tol=1e-9)):
            row["spot_usd_per_hour"] = format_price(spot)
            report.changes.append(Change(cloud, spec.region, spec.instance_type, "spot", old_spot, spot))
            changed = True
        if changed:
            report.refreshed += 1
        else:
            report.unchanged += 1


def render_csv(rows: Sequence[Mapping[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row[c] for c in COLUMNS])
    return buf.getvalue()


def write_catalog(text: str, out: Path) -> None:
    """Replace `out` with `text` in one step, only once the new file loads as a catalog."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise RefreshError(f"cannot write {out}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            PriceCatalog.load(tmp)
        except ValueError as exc:
            raise RefreshError(f"the refreshed catalog does not validate ({exc}); {out} left as it was") from None
        os.chmod(tmp, out.stat().st_mode & 0o777 if out.exists() else 0o644)
        os.replace(tmp, out)
    except OSError as exc:
        raise RefreshError(f"cannot write {out}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


def refresh(source: Path, out: Path, clouds: Sequence[str], endpoints: Endpoints,
            fetchers: Mapping[str, Fetcher] | None = None) -> RefreshReport:
    """Re-price `source`'s rows of `clouds` and write the result to `out`, unless every cloud asked failed."""
    rows = read_rows(source)
    report = RefreshReport(source=source, out=out, clouds=[CloudReport(c) for c in clouds])
    mine = {c.cloud: [r for r in rows if r["cloud"].strip() == c.cloud] for c in report.clouds}
    for c in report.clouds:
        c.rows = len(mine[c.cloud])
    results = _fetch_all({c: [_spec(r) for r in rs] for c, rs in mine.items()}, endpoints,
                         fetchers if fetchers is not None else _fetchers())
    for c in report.clouds:
        result = results.get(c.cloud)
        if result is None:
            continue
        if isinstance(result, str):
            c.error, c.kept_old = result, c.rows
            continue
        c.requests = result.requests
        c.warnings += result.warnings
        _merge(c.cloud, mine[c.cloud], result, c)
    if not report.all_failed:
        write_catalog(render_csv(rows), out)
        report.written = True
    return report


def _change_text(change: Change) -> str:
    if change.old is None:
        return "new"
    return f"{change.relative:+.1%}"


def print_report(report: RefreshReport, out: Console, err: Console) -> None:
    """Warnings one line each on stderr; per-cloud counts and the biggest changes as tables on stdout."""
    for c in report.clouds:
        if c.error:
            err.print(f"warning: {c.cloud}: prices not refreshed, kept its previous rows: {c.error}",
                      markup=False, highlight=False, soft_wrap=True)
        for line in c.warnings:
            err.print(f"warning: {c.cloud}: {line}", markup=False, highlight=False, soft_wrap=True)
    table = Table(title=f"price refresh of {report.source}")
    for col in ("cloud", "result", "rows", "refreshed", "unchanged", "kept old", "requests"):
        table.add_column(col, justify="left" if col in ("cloud", "result") else "right")
    for c in report.clouds:
        result = "no rows" if not c.rows else "failed" if c.error else "ok"
        if c.warnings and not c.error:
            result += f", {len(c.warnings)} warning{'s' if len(c.warnings) > 1 else ''}"
        table.add_row(c.cloud, result, str(c.rows), str(c.refreshed), str(c.unchanged), str(c.kept_old),
                      str(c.requests))
    out.print(table)
    changes = sorted((ch for c in report.clouds for ch in c.changes), key=lambda ch: -abs(ch.relative))
    if changes:
        biggest = Table(title=f"biggest price changes ({min(len(changes), _SHOWN_CHANGES)} of {len(changes)})")
        for col in ("cloud", "region", "instance type", "price", "old $/h", "new $/h", "change"):
            biggest.add_column(col, justify="right" if col in ("old $/h", "new $/h", "change") else "left")
        for ch in changes[:_SHOWN_CHANGES]:
            biggest.add_row(ch.cloud, ch.region, ch.instance_type, ch.price,
                            "-" if ch.old is None else format_price(ch.old), format_price(ch.new), _change_text(ch))
        out.print(biggest)
    if report.written:
        out.print(f"wrote {report.out}", markup=False, highlight=False, soft_wrap=True)
    else:
        kept = "left as it was" if report.out.exists() else "not created"
        out.print(f"every cloud failed: nothing written, {report.out} {kept}", markup=False, highlight=False,
                  soft_wrap=True)


def refresh_command(clouds: Sequence[str] | None, out_path: Path | None, config: Path | None,
                    endpoints: Endpoints, out: Console, err: Console) -> int:
    """The command's whole behaviour; the exit code: 0 when some cloud was refreshed, 1 when every one failed."""
    asked = parse_clouds(clouds)
    source, target = resolve_paths(config, out_path)
    report = refresh(source, target, asked, endpoints)
    print_report(report, out, err)
    configured = configured_catalog(config) if config is not None else None
    if report.written and (configured is None or not _same_file(configured, target)):
        out.print(f"to use it, set prices.catalog: {target} in the config", markup=False, highlight=False,
                  soft_wrap=True)
    return 1 if report.all_failed else 0
