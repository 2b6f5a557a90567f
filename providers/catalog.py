"""GPU instance prices as data: the bundled CSV catalog and pure lookups of an `Offering` in it."""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spillover.scheduler.errors import format_validation_error
from spillover.scheduler.model import Cloud

BUNDLED_CATALOG = Path(str(resources.files("spillover.config"))) / "gpu_instances.csv"
COLUMNS = (
    "cloud",
    "region",
    "instance_type",
    "gpu_type",
    "gpus",
    "vcpus",
    "memory_gib",
    "on_demand_usd_per_hour",
    "spot_usd_per_hour",
)


@dataclass(frozen=True)
class Offering:
    """One way to buy an instance type: where, what hardware, spot or on-demand, and the hourly price."""

    cloud: Cloud
    region: str
    instance_type: str
    gpu_type: str
    gpus: int
    vcpus: int
    memory_gib: float
    spot: bool
    price_per_hour: float


class _Row(BaseModel):
    """A CSV row; an empty spot price means the instance type has no spot offer there."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    cloud: Cloud
    region: Annotated[str, Field(min_length=1)]
    instance_type: Annotated[str, Field(min_length=1)]
    gpu_type: Annotated[str, Field(min_length=1)]
    gpus: Annotated[int, Field(ge=1)]
    vcpus: Annotated[int, Field(ge=1)]
    memory_gib: Annotated[float, Field(gt=0)]
    on_demand_usd_per_hour: Annotated[float, Field(ge=0)]
    spot_usd_per_hour: Annotated[float | None, Field(ge=0)] = None

    @field_validator("spot_usd_per_hour", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def offerings(self) -> list[Offering]:
        common = dict(
            cloud=self.cloud,
            region=self.region,
            instance_type=self.instance_type,
            gpu_type=self.gpu_type,
            gpus=self.gpus,
            vcpus=self.vcpus,
            memory_gib=self.memory_gib,
        )
        found = [Offering(**common, spot=False, price_per_hour=self.on_demand_usd_per_hour)]
        if self.spot_usd_per_hour is not None:
            found.append(Offering(**common, spot=True, price_per_hour=self.spot_usd_per_hour))
        return found


def _listing(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "none"


def _suggest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class PriceCatalog:
    """Instance types with hardware and prices per (cloud, region); lookups only, never the network."""

    def __init__(self, offerings: Iterable[Offering], source: str = "<catalog>") -> None:
        self.source = source
        self._offers: dict[tuple[Cloud, str, str, bool], Offering] = {}
        for offer in offerings:
            self._offers[(offer.cloud, offer.region, offer.instance_type, offer.spot)] = offer

    @classmethod
    def load(cls, path: Path | str | None = None) -> PriceCatalog:
        """Read a catalog CSV (the bundled one when `path` is None); a bad row is a ValueError naming its line."""
        path = Path(path) if path is not None else BUNDLED_CATALOG
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read: {exc}") from None
        reader = csv.DictReader(text.splitlines())
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path} line 1: expected the columns {','.join(COLUMNS)}")
        offerings: list[Offering] = []
        seen: dict[tuple[str, str, str], int] = {}
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                raise ValueError(f"{path} line {line}: expected {len(COLUMNS)} columns")
            try:
                parsed = _Row.model_validate(row)
            except ValidationError as exc:
                raise ValueError(f"{path} line {line}: " + "; ".join(format_validation_error(exc, model=_Row))) from None
            key = (parsed.cloud.value, parsed.region, parsed.instance_type)
            if key in seen:
                raise ValueError(f"{path} line {line}: {' '.join(key)} is already listed on line {seen[key]}")
            seen[key] = line
            offerings.extend(parsed.offerings())
        return cls(offerings, source=str(path))

    @classmethod
    @cache
    def bundled(cls) -> PriceCatalog:
        """The catalog shipped with Spillover, read once per process."""
        return cls.load(None)

    def offerings(self) -> list[Offering]:
        return list(self._offers.values())

    def clouds(self) -> list[Cloud]:
        return sorted({c for c, _, _, _ in self._offers}, key=lambda c: c.value)

    def regions(self, cloud: Cloud | str) -> list[str]:
        cloud = _cloud(cloud)
        return sorted({r for c, r, _, _ in self._offers if c == cloud})

    def instance_types(self, cloud: Cloud | str, region: str) -> list[str]:
        cloud = _cloud(cloud)
        return sorted({i for c, r, i, _ in self._offers if c == cloud and r == region})

    def gpu_types(self) -> list[str]:
        return sorted({o.gpu_type for o in self._offers.values()})

    def offer(self, cloud: Cloud | str, region: str, instance_type: str, spot: bool) -> Offering:
        """The offering, or a LookupError that says what is listed instead."""
        try:
            cloud = Cloud(cloud)
        except ValueError:
            raise LookupError(
                f"unknown cloud '{cloud}'; clouds with prices: {_listing(c.value for c in self.clouds())}"
            ) from None
        found = self._offers.get((cloud, region, instance_type, spot))
        if found is not None:
            return found
        regions = self.regions(cloud)
        if region not in regions:
            raise LookupError(
                f"no prices for {cloud.value} region '{region}'{_suggest(region, regions)}; "
                f"regions listed for {cloud.value}: {_listing(regions)}"
            )
        types = self.instance_types(cloud, region)
        if instance_type not in types:
            raise LookupError(
                f"unknown instance type '{instance_type}' in {cloud.value} {region}{_suggest(instance_type, types)}; "
                f"valid: {_listing(types)}"
            )
        raise LookupError(f"no spot price listed for {instance_type} in {cloud.value} {region}; use spot: false")


def _cloud(cloud: Cloud | str) -> Cloud | str:
    try:
        return Cloud(cloud)
    except ValueError:
        return cloud
