"""The price catalog: the bundled CSV, lookups, and the errors that say what is listed instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from spillover.providers.catalog import BUNDLED_CATALOG, COLUMNS, Offering, PriceCatalog
from spillover.scheduler.model import Cloud

HEADER = ",".join(COLUMNS)


def write_catalog(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def bundled() -> PriceCatalog:
    return PriceCatalog.load()


def test_bundled_catalog_prices_p4d_on_demand_and_spot(bundled: PriceCatalog) -> None:
    on_demand = bundled.offer("aws", "us-east-1", "p4d.24xlarge", spot=False)
    spot = bundled.offer(Cloud.AWS, "us-east-1", "p4d.24xlarge", spot=True)
    assert on_demand == Offering(Cloud.AWS, "us-east-1", "p4d.24xlarge", "A100", 8, 96, 1152.0, False, 21.957642)
    assert (spot.spot, spot.price_per_hour, spot.gpus) == (True, 8.1915, 8)


def test_bundled_catalog_is_the_file_in_config() -> None:
    assert BUNDLED_CATALOG == Path(__file__).resolve().parents[1] / "config" / "gpu_instances.csv"
    assert PriceCatalog.bundled().offerings() == PriceCatalog.load(BUNDLED_CATALOG).offerings()


def test_empty_spot_column_means_no_spot_offering(bundled: PriceCatalog) -> None:
    kinds = {o.spot for o in bundled.offerings() if o.instance_type == "p5.4xlarge"}
    assert kinds == {False}
    with pytest.raises(LookupError, match=r"no spot price listed for p5\.4xlarge in aws us-east-1; use spot: false"):
        bundled.offer("aws", "us-east-1", "p5.4xlarge", spot=True)


def test_regions_and_instance_types_are_listed_per_cloud(bundled: PriceCatalog) -> None:
    assert bundled.regions("gcp") == ["asia-northeast1", "us-central1"]
    assert bundled.regions(Cloud.AZURE) == ["eastus"]
    assert bundled.instance_types("gcp", "us-central1") == ["a2-highgpu-1g", "a2-highgpu-8g", "a3-highgpu-8g"]
    assert bundled.instance_types("gcp", "mars-1") == []


def test_unknown_instance_type_lists_the_valid_ones(bundled: PriceCatalog) -> None:
    with pytest.raises(LookupError) as info:
        bundled.offer("gcp", "us-central1", "a2-highgpu-2g", spot=False)
    message = str(info.value)
    assert "unknown instance type 'a2-highgpu-2g' in gcp us-central1" in message
    assert "valid: a2-highgpu-1g, a2-highgpu-8g, a3-highgpu-8g" in message


def test_unknown_region_lists_the_regions_of_that_cloud(bundled: PriceCatalog) -> None:
    with pytest.raises(LookupError, match="regions listed for azure: eastus"):
        bundled.offer("azure", "westeurope", "Standard_ND96asr_v4", spot=False)


def test_unknown_cloud_lists_the_clouds(bundled: PriceCatalog) -> None:
    with pytest.raises(LookupError, match="unknown cloud 'oci'; clouds with prices: aws, azure, gcp"):
        bundled.offer("oci", "us-ashburn-1", "BM.GPU4.8", spot=False)


def test_a_pinned_catalog_replaces_the_bundled_prices(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, "aws,us-east-1,p4d.24xlarge,A100,8,96,1152,20.00,6.00")
    catalog = PriceCatalog.load(path)
    assert catalog.offer("aws", "us-east-1", "p4d.24xlarge", spot=True).price_per_hour == 6.0
    assert catalog.instance_types("aws", "us-east-1") == ["p4d.24xlarge"]
    assert len(catalog.offerings()) == 2


@pytest.mark.parametrize(
    ("rows", "header", "expected"),
    [
        (["aws,us-east-1,x,A100,eight,96,1152,21.9,"], HEADER, "line 2: gpus: must be a whole number (got 'eight')"),
        (["aws,us-east-1,x,A100,8,96,1152,21.9,", "ibm,dal,y,A100,8,96,1152,3,"], HEADER, "line 3: cloud: must be one of"),
        (["aws,us-east-1,x,A100,8,96,1152,-1,"], HEADER, "line 2: on_demand_usd_per_hour: must be at least 0 (got '-1')"),
        (["aws,us-east-1,x,A100,8,96"], HEADER, "line 2: expected 9 columns"),
        (["aws,us-east-1,x,A100,8,96,1152,1,1", "aws,us-east-1,x,A100,8,96,1152,2,1"], HEADER,
         "line 3: aws us-east-1 x is already listed on line 2"),
        ([], "cloud,region,instance,gpu", "line 1: expected the columns cloud,region,instance_type"),
    ],
    ids=["not-a-number", "unknown-cloud", "negative-price", "short-row", "duplicate-row", "wrong-header"],
)
def test_a_malformed_catalog_names_file_and_line(tmp_path: Path, rows: list[str], header: str, expected: str) -> None:
    path = write_catalog(tmp_path, *rows, header=header)
    with pytest.raises(ValueError) as info:
        PriceCatalog.load(path)
    assert str(info.value).startswith(str(path))
    assert expected in str(info.value)


def test_missing_catalog_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        PriceCatalog.load(tmp_path / "absent.csv")
