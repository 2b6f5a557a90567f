"""GPU instance prices from the clouds' own price APIs: AWS Price List, EC2 spot history, Azure Retail, GCP Billing."""

from spillover.providers.prices.common import FetchResult, PriceFetchError, Quote, RowSpec

__all__ = ["FetchResult", "PriceFetchError", "Quote", "RowSpec"]
