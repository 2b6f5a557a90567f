"""GCP prices from the Cloud Billing Catalog API: a VM's price is the sum of its GPU, vCPU and RAM SKUs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, ValidationError

from spillover.providers.prices.common import (
    MAX_PAGES,
    FetchResult,
    PriceFetchError,
    Quote,
    RowSpec,
    get_json,
    http_session,
    redact,
)

DEFAULT_URL = "https://cloudbilling.googleapis.com"
COMPUTE_ENGINE = "6F81-5844-456A"  # the Compute Engine service id in the Billing Catalog
SCOPE = "https://www.googleapis.com/auth/cloud-billing.readonly"
PAGE_SIZE = 5000  # the API's largest page


@dataclass(frozen=True)
class MachineSkus:
    """The Billing Catalog SKUs that add up to one machine family's price with one GPU type attached.

    Each name is an on-demand SKU description up to " running in <location>". Spot SKUs (usageType
    Preemptible) carry the same name as "Spot Preemptible <name> running in ..." (cores, RAM) or
    "<name> attached to Spot Preemptible VMs running in ..." (GPUs); older ones read "Preemptible <name>".
    """

    prefix: str  # of the machine type, e.g. "a2-highgpu-"
    gpu_type: str  # the catalog's gpu_type column
    gpu: str
    core: str
    ram: str


# A3 High's H100s are listed as their own GPU SKU next to A3 core and RAM SKUs (the machine-type price on the
# pricing page is their sum), so a3-highgpu is assembled like every other family here. A machine type whose
# family or GPU is not in this table keeps its previous price, with a warning naming it.
MACHINE_SKUS: tuple[MachineSkus, ...] = (
    MachineSkus("a2-highgpu-", "A100", "Nvidia Tesla A100 GPU", "A2 Instance Core", "A2 Instance Ram"),
    MachineSkus("a2-megagpu-", "A100", "Nvidia Tesla A100 GPU", "A2 Instance Core", "A2 Instance Ram"),
    MachineSkus("a2-ultragpu-", "A100-80GB", "Nvidia A100 80GB GPU", "A2 Instance Core", "A2 Instance Ram"),
    MachineSkus("a3-highgpu-", "H100", "Nvidia H100 80GB GPU", "A3 Instance Core", "A3 Instance Ram"),
    MachineSkus("g2-standard-", "L4", "Nvidia L4 GPU", "G2 Instance Core", "G2 Instance Ram"),
    MachineSkus("n1-", "T4", "Nvidia Tesla T4 GPU", "N1 Predefined Instance Core", "N1 Predefined Instance Ram"),
    MachineSkus("n1-", "V100", "Nvidia Tesla V100 GPU", "N1 Predefined Instance Core", "N1 Predefined Instance Ram"),
    MachineSkus("n1-", "P100", "Nvidia Tesla P100 GPU", "N1 Predefined Instance Core", "N1 Predefined Instance Ram"),
)
_UNITS = {"gpu": "h", "core": "h", "ram": "GiBy.h"}  # what each part is priced per
_DESCRIPTION = re.compile(
    r"^(?P<spot>Spot Preemptible |Preemptible )?(?P<name>.+?)(?P<attached> attached to Spot Preemptible VMs)?"
    r" running in (?P<where>.+)$"
)


def machine_skus(row: RowSpec) -> MachineSkus | None:
    for entry in MACHINE_SKUS:
        if row.instance_type.startswith(entry.prefix) and row.gpu_type == entry.gpu_type:
            return entry
    return None


class _Money(BaseModel):
    model_config = ConfigDict(extra="ignore")

    currencyCode: str = "USD"
    units: int = 0  # an int64, sent as a JSON string
    nanos: int = 0


class _Tier(BaseModel):
    model_config = ConfigDict(extra="ignore")

    startUsageAmount: float = 0.0
    unitPrice: _Money


class _Expression(BaseModel):
    model_config = ConfigDict(extra="ignore")

    usageUnit: str
    tieredRates: list[_Tier]


class _PricingInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    effectiveTime: str = ""
    pricingExpression: _Expression


class _Category(BaseModel):
    model_config = ConfigDict(extra="ignore")

    resourceGroup: str = ""
    usageType: str


class Sku(BaseModel):
    """One Billing Catalog SKU, the fields pricing needs."""

    model_config = ConfigDict(extra="ignore")

    skuId: str = ""
    description: str
    category: _Category
    serviceRegions: list[str] = []
    pricingInfo: list[_PricingInfo]

    def unit_price(self) -> tuple[float, str]:
        """USD per usage unit: the current pricing (the timeline's last entry), its tier starting at 0."""
        current = self.pricingInfo[-1].pricingExpression
        tier = next((t for t in current.tieredRates if t.startUsageAmount == 0), None)
        if tier is None or tier.unitPrice.currencyCode != "USD":
            raise ValueError(f"SKU {self.skuId} has no USD tier starting at 0")
        return tier.unitPrice.units + tier.unitPrice.nanos / 1e9, current.usageUnit


class _Page(BaseModel):
    model_config = ConfigDict(extra="ignore")

    skus: list[dict[str, Any]] = []
    nextPageToken: str = ""


def sku_name(description: str, usage_type: str) -> tuple[str, bool] | None:
    """(on-demand name, spot?) of a SKU description, or None for commitments and other usage types."""
    m = _DESCRIPTION.match(description)
    if m is None or usage_type not in ("OnDemand", "Preemptible"):
        return None
    spot = usage_type == "Preemptible"
    marked = bool(m.group("spot") or m.group("attached"))
    if marked != spot:
        return None
    return m.group("name"), spot


class _Prices:
    """The unit prices of the SKUs the rows need, per (name, spot, region), the most specific SKU winning."""

    def __init__(self, rows: Sequence[RowSpec]) -> None:
        self.regions = {r.region for r in rows}
        self.roles: dict[str, str] = {}
        for entry in filter(None, map(machine_skus, rows)):
            self.roles.update({entry.gpu: "gpu", entry.core: "core", entry.ram: "ram"})
        self._found: dict[tuple[str, bool, str], tuple[int, float]] = {}

    def add(self, raw: dict[str, Any]) -> None:
        described = sku_name(str(raw.get("description", "")), str((raw.get("category") or {}).get("usageType", "")))
        if described is None or described[0] not in self.roles:
            return
        sku = Sku.model_validate(raw)
        regions = self.regions.intersection(sku.serviceRegions)
        if not regions:
            return
        price, unit = sku.unit_price()
        expected = _UNITS[self.roles[described[0]]]
        if unit != expected:
            raise ValueError(f"SKU {sku.skuId} is priced per {unit}, not per {expected}")
        for region in regions:
            key = (described[0], described[1], region)
            # a SKU for fewer regions is the more specific price for each of them
            if key not in self._found or len(sku.serviceRegions) < self._found[key][0]:
                self._found[key] = (len(sku.serviceRegions), price)

    def get(self, name: str, spot: bool, region: str) -> float | None:
        found = self._found.get((name, spot, region))
        return None if found is None else found[1]


def instance_price(row: RowSpec, entry: MachineSkus, prices: _Prices, spot: bool) -> float | str:
    """gpus x GPU + vcpus x core + memory_gib x RAM, or the name of the first SKU missing for the region."""
    parts = ((row.gpus, entry.gpu), (row.vcpus, entry.core), (row.memory_gib, entry.ram))
    total = 0.0
    for count, name in parts:
        unit = prices.get(name, spot, row.region)
        if unit is None:
            return f"{'Preemptible' if spot else 'OnDemand'} SKU '{name}' for {row.region}"
        total += count * unit
    return round(total, 6)


def _auth_headers(api_key: str | None) -> tuple[dict[str, str], list[str]]:
    """Headers that authenticate to the Billing API, and the secrets in them (kept out of every message)."""
    if api_key:
        return {"X-Goog-Api-Key": api_key}, [api_key]
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        credentials, _project = google.auth.default(scopes=[SCOPE])
        credentials.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.DefaultCredentialsError:
        raise PriceFetchError("auth", "no Application Default Credentials (run `gcloud auth application-default "
                                      "login`, or give --gcp-api-key / SPILLOVER_GCP_API_KEY)") from None
    except google.auth.exceptions.TransportError:
        raise PriceFetchError("unreachable", "cannot reach Google's token endpoint to refresh credentials") from None
    except google.auth.exceptions.RefreshError as exc:
        cause = redact(" ".join(str(exc).split()))[:200]
        raise PriceFetchError("auth", f"the Application Default Credentials did not refresh: {cause}") from None
    headers: dict[str, str] = {}
    # apply() also sets x-goog-user-project when the credentials name a quota project
    credentials.apply(headers)
    return headers, [getattr(credentials, "token", None) or ""]


def _read_skus(session: requests.Session, base_url: str, headers: dict[str, str], secrets: Iterable[str],
               prices: _Prices, result: FetchResult) -> None:
    url = f"{base_url.rstrip('/')}/v1/services/{COMPUTE_ENGINE}/skus"
    token = ""
    for number in range(1, MAX_PAGES + 1):
        params = {"pageSize": str(PAGE_SIZE), "currencyCode": "USD"}
        if token:
            params["pageToken"] = token
        result.requests += 1
        body = get_json(session, url, params=params, headers=headers, what=f"Compute Engine SKUs page {number}",
                        secrets=secrets)
        try:
            page = _Page.model_validate(body)
            for raw in page.skus:
                prices.add(raw)
        except (ValidationError, ValueError, TypeError, AttributeError) as exc:
            detail = ("a SKU is not in the Billing Catalog format" if isinstance(exc, ValidationError)
                      else str(exc).splitlines()[0])
            raise PriceFetchError("unparseable", f"Compute Engine SKUs page {number}: {detail}") from None
        token = page.nextPageToken
        if not token:
            return
    raise PriceFetchError("unparseable", f"Compute Engine SKUs: more than {MAX_PAGES} pages")


def fetch(rows: Sequence[RowSpec], *, base_url: str | None = None, api_key: str | None = None,
          session: requests.Session | None = None) -> FetchResult:
    """Prices for `rows` from one pass over the Compute Engine SKUs."""
    result = FetchResult()
    priced = [(row, machine_skus(row)) for row in rows]
    for row, entry in priced:
        if entry is None:
            result.reasons[row.key] = (f"no SKU mapping for {row.instance_type} with {row.gpu_type} "
                                       "(providers/prices/gcp.py MACHINE_SKUS)")
    if all(entry is None for _row, entry in priced):
        return result
    headers, secrets = _auth_headers(api_key)
    prices = _Prices(rows)
    _read_skus(session or http_session(), base_url or DEFAULT_URL, headers, secrets, prices, result)
    for row, entry in priced:
        if entry is None:
            continue
        on_demand = instance_price(row, entry, prices, spot=False)
        if isinstance(on_demand, str):
            result.reasons[row.key] = f"no {on_demand}"
            continue
        spot = instance_price(row, entry, prices, spot=True)
        result.quotes[row.key] = Quote(on_demand, spot if isinstance(spot, float) else None)
    return result
