"""Azure prices from the public Retail Prices API: Linux pay-as-you-go and Spot meters of each VM size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, ValidationError

from spillover.providers.prices.common import MAX_PAGES, FetchResult, PriceFetchError, Quote, RowSpec, get_json, http_session

DEFAULT_URL = "https://prices.azure.com/api/retail/prices"
API_VERSION = "2023-01-01-preview"


class RetailItem(BaseModel):
    """One meter of a Retail Prices page."""

    model_config = ConfigDict(extra="ignore")

    currencyCode: str = "USD"
    retailPrice: float
    armRegionName: str
    armSkuName: str
    productName: str
    skuName: str
    type: str
    unitOfMeasure: str = "1 Hour"
    effectiveStartDate: str = ""
    isPrimaryMeterRegion: bool = True

    @property
    def is_linux_consumption(self) -> bool:
        # Windows meters are separate products; Low Priority is the retired Batch/scale-set tier, not Spot
        return (self.type == "Consumption" and "Windows" not in self.productName
                and "Low Priority" not in self.skuName and self.unitOfMeasure == "1 Hour"
                and self.currencyCode == "USD")

    @property
    def is_spot(self) -> bool:
        return "Spot" in self.skuName


class RetailPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Items: list[dict[str, Any]] = []
    NextPageLink: str | None = None


def _best(items: list[RetailItem]) -> float | None:
    """The primary meter region's newest price when a size has several meters of one kind."""
    if not items:
        return None
    return max(items, key=lambda i: (i.isPrimaryMeterRegion, i.effectiveStartDate)).retailPrice


def quote(items: Sequence[RetailItem], region: str, sku: str) -> Quote | None:
    """The on-demand and spot price of `sku` in `region` among a query's meters; None when not listed."""
    mine = [i for i in items if i.armSkuName.lower() == sku.lower() and i.armRegionName == region
            and i.is_linux_consumption]
    on_demand = _best([i for i in mine if not i.is_spot])
    if on_demand is None:
        return None
    spot = _best([i for i in mine if i.is_spot])
    # Azure lists some sizes with a "Spot" meter at the pay-as-you-go price: no spot discount, no spot offer
    if spot is not None and spot >= on_demand:
        spot = None
    return Quote(on_demand, spot)


def _literal(value: str) -> str:
    return value.replace("'", "''")  # OData's escape inside a quoted string


def meters(session: requests.Session, base_url: str, region: str, sku: str, result: FetchResult) -> list[RetailItem]:
    """Every meter of one VM size in one region, following NextPageLink."""
    what = f"the Retail Prices of {sku} in {region}"
    query = (f"serviceName eq 'Virtual Machines' and armSkuName eq '{_literal(sku)}' "
             f"and armRegionName eq '{_literal(region)}'")
    url: str | None = base_url
    params: dict[str, str] | None = {"api-version": API_VERSION, "$filter": query}
    found: list[RetailItem] = []
    for _ in range(MAX_PAGES):
        result.requests += 1
        body = get_json(session, url, params=params, what=what)
        try:
            page = RetailPage.model_validate(body)
            for raw in page.Items:
                if str(raw.get("armSkuName", "")).lower() == sku.lower():
                    found.append(RetailItem.model_validate(raw))
        except ValidationError:
            raise PriceFetchError("unparseable", f"{what}: a page is not a Retail Prices answer") from None
        url, params = page.NextPageLink, None  # the link carries the query and the skip count
        if not url:
            return found
    raise PriceFetchError("unparseable", f"{what}: more than {MAX_PAGES} pages")


def fetch(rows: Sequence[RowSpec], *, base_url: str | None = None,
          session: requests.Session | None = None) -> FetchResult:
    """Prices for `rows`, one query per (region, VM size); the API needs no credentials."""
    session = session or http_session()
    result = FetchResult()
    for row in rows:
        found = quote(meters(session, base_url or DEFAULT_URL, row.region, row.instance_type, result),
                      row.region, row.instance_type)
        if found is not None:
            result.quotes[row.key] = found
    return result
