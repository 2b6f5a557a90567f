"""AWS prices: on-demand from the Price List API (pricing:GetProducts), spot from EC2 DescribeSpotPriceHistory."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from spillover.providers.prices.common import MAX_PAGES, FetchResult, Key, PriceFetchError, Quote, RowSpec, host_of

# The Price List API is served from us-east-1, eu-central-1 and ap-south-1 only; it answers for every region.
PRICING_REGION = "us-east-1"
SPOT_PRODUCT = "Linux/UNIX"
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=5,
    read_timeout=60,
    user_agent_extra="spillover-prices",
)
_AUTH_CODES = {
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "AuthFailure",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "OptInRequired",
}
_THROTTLE_CODES = {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException"}


class _Dimension(BaseModel):
    model_config = ConfigDict(extra="ignore")

    unit: str
    pricePerUnit: dict[str, str]


class _Term(BaseModel):
    model_config = ConfigDict(extra="ignore")

    priceDimensions: dict[str, _Dimension]


class _Product(BaseModel):
    model_config = ConfigDict(extra="ignore")

    attributes: dict[str, str]


class PriceListItem(BaseModel):
    """One entry of GetProducts' PriceList (a JSON string on the wire): the product and its terms."""

    model_config = ConfigDict(extra="ignore")

    product: _Product
    terms: dict[str, dict[str, _Term]] = {}

    def on_demand_usd(self) -> float | None:
        """The hourly on-demand USD price, or None when the item has no such term."""
        for term in self.terms.get("OnDemand", {}).values():
            for dimension in term.priceDimensions.values():
                usd = dimension.pricePerUnit.get("USD")
                if dimension.unit.lower() in ("hrs", "hours") and usd is not None:
                    return float(usd)
        return None


def _filters(region: str, instance_type: str) -> list[dict[str, str]]:
    wanted = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        # "Used" is the price of running the instance; the other values price capacity reservations
        "capacitystatus": "Used",
    }
    return [{"Type": "TERM_MATCH", "Field": name, "Value": value} for name, value in wanted.items()]


def _classify(exc: Exception, what: str) -> PriceFetchError:
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return PriceFetchError("auth", f"no AWS credentials for {what} (environment, ~/.aws or an instance role)")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url")
        where = host_of(endpoint) if endpoint else "the endpoint"
        if isinstance(exc, ReadTimeoutError):
            return PriceFetchError("unreachable", f"{where} did not answer {what} in time")
        return PriceFetchError("unreachable", f"cannot reach {where} for {what}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        message = " ".join(str(error.get("Message", "")).split())[:200]
        detail = f"{code} (HTTP {status}) for {what}" + (f": {message}" if message else "")
        if code in _AUTH_CODES or status in (401, 403):
            return PriceFetchError("auth", detail)
        if code in _THROTTLE_CODES or status == 429:
            return PriceFetchError("throttled", detail)
        return PriceFetchError("http", detail)
    if isinstance(exc, (ValidationError, ValueError, KeyError, TypeError)):
        return PriceFetchError("unparseable", f"{what}: the answer is not in the expected format")
    if isinstance(exc, BotoCoreError):
        return PriceFetchError("unreachable", f"{what}: {type(exc).__name__}")
    return PriceFetchError("http", f"{what}: {type(exc).__name__}")


def _pick(items: Sequence[PriceListItem], region: str, instance_type: str) -> float | None:
    """The plain on-demand price among the products the filters matched."""
    candidates = []
    for item in items:
        a = item.product.attributes
        if a.get("instanceType") != instance_type or a.get("regionCode", region) != region:
            continue
        # Capacity Blocks and other purchase options carry their own OnDemand-looking terms
        if a.get("marketoption", "OnDemand") != "OnDemand":
            continue
        price = item.on_demand_usd()
        if price is not None and price > 0:
            candidates.append((a.get("operation") != "RunInstances", price))
    return min(candidates)[1] if candidates else None


def on_demand_price(pricing: Any, region: str, instance_type: str, result: FetchResult) -> float | None:
    """GetProducts for one (region, instance type), every page; None when the Price List does not list it."""
    what = f"pricing:GetProducts {instance_type} in {region}"
    items: list[PriceListItem] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        kwargs: dict[str, Any] = {"ServiceCode": "AmazonEC2", "Filters": _filters(region, instance_type),
                                  "FormatVersion": "aws_v1", "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        try:
            result.requests += 1
            page = pricing.get_products(**kwargs)
            items += [PriceListItem.model_validate(json.loads(raw)) for raw in page.get("PriceList", [])]
        except Exception as exc:  # noqa: BLE001 - every failure becomes one classified line
            raise _classify(exc, what) from None
        token = page.get("NextToken")
        if not token:
            return _pick(items, region, instance_type)
    raise PriceFetchError("unparseable", f"{what}: more than {MAX_PAGES} pages")


def spot_prices(ec2: Any, region: str, instance_types: Sequence[str], result: FetchResult,
                now: datetime | None = None) -> dict[str, float]:
    """Median across availability zones of each zone's latest Linux/UNIX spot price, per instance type."""
    what = f"ec2:DescribeSpotPriceHistory in {region}"
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    token: str | None = None
    for _ in range(MAX_PAGES):
        # StartTime now: the API then answers with the price in effect now in each zone
        kwargs: dict[str, Any] = {"InstanceTypes": list(instance_types), "ProductDescriptions": [SPOT_PRODUCT],
                                  "StartTime": now or datetime.now(timezone.utc), "MaxResults": 1000}
        if token:
            kwargs["NextToken"] = token
        try:
            result.requests += 1
            page = ec2.describe_spot_price_history(**kwargs)
            for entry in page.get("SpotPriceHistory", []):
                zone_key = (entry["InstanceType"], entry["AvailabilityZone"])
                seen = (entry["Timestamp"], float(entry["SpotPrice"]))
                if zone_key not in latest or seen[0] > latest[zone_key][0]:
                    latest[zone_key] = seen
        except Exception as exc:  # noqa: BLE001 - every failure becomes one classified line
            raise _classify(exc, what) from None
        token = page.get("NextToken")
        if not token:
            break
    else:
        raise PriceFetchError("unparseable", f"{what}: more than {MAX_PAGES} pages")
    by_type: dict[str, list[float]] = defaultdict(list)
    for (instance_type, _zone), (_at, price) in latest.items():
        by_type[instance_type].append(price)
    return {t: round(statistics.median(p), 6) for t, p in by_type.items()}


def fetch(rows: Sequence[RowSpec], *, endpoint_url: str | None = None,
          session: boto3.session.Session | None = None) -> FetchResult:
    """On-demand and spot prices for `rows`; a spot failure keeps the previous spot prices and says so."""
    session = session or boto3.session.Session()
    result = FetchResult()
    try:
        pricing = session.client("pricing", region_name=PRICING_REGION, endpoint_url=endpoint_url, config=_CONFIG)
    except Exception as exc:  # noqa: BLE001
        raise _classify(exc, "the pricing client") from None
    on_demand: dict[Key, float] = {}
    for row in rows:
        price = on_demand_price(pricing, row.region, row.instance_type, result)
        if price is not None:
            on_demand[row.key] = price
    types_by_region: Mapping[str, list[str]] = defaultdict(list)
    for row in rows:
        types_by_region[row.region].append(row.instance_type)
    spot: dict[Key, float] = {}
    for region, types in types_by_region.items():
        try:
            ec2 = session.client("ec2", region_name=region, endpoint_url=endpoint_url, config=_CONFIG)
            found = spot_prices(ec2, region, sorted(set(types)), result)
        except Exception as exc:  # noqa: BLE001 - spot is optional: on-demand prices still count
            error = exc if isinstance(exc, PriceFetchError) else _classify(exc, "the ec2 client")
            result.warnings.append(f"{region} spot prices not read ({error}); kept the previous spot prices")
            result.spot_unread.update((region, t) for t in types)
            continue
        spot.update({(region, t): p for t, p in found.items()})
    result.quotes = {key: Quote(price, spot.get(key)) for key, price in on_demand.items()}
    return result
