"""`spillover prices refresh` against recorded AWS, Azure and GCP price API responses served on 127.0.0.1."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from spillover.providers.catalog import BUNDLED_CATALOG, PriceCatalog

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "prices"
GCP_KEY = "AIzaSyTest-recorded-key-0123456789abcdef"
HARDWARE = ("cloud", "region", "instance_type", "gpu_type", "gpus", "vcpus", "memory_gib")

# the rows the recordings price, plus aws p3.2xlarge, which they do not list
CURRENT = """\
cloud,region,instance_type,gpu_type,gpus,vcpus,memory_gib,on_demand_usd_per_hour,spot_usd_per_hour
aws,us-east-1,p5.48xlarge,H100,8,192,2048,55.04,17.6289
aws,us-west-2,p5.48xlarge,H100,8,192,2048,55.04,12.6935
aws,us-east-1,p4d.24xlarge,A100,8,96,1152,21.957642,8.1915
aws,us-east-1,g4dn.xlarge,T4,1,4,16,0.526,0.2000
aws,us-east-1,p3.2xlarge,V100,1,8,61,3.06,0.4281
gcp,us-central1,a3-highgpu-8g,H100,8,208,1872,43.06615,26.83013
gcp,us-central1,a2-highgpu-1g,A100,1,12,85,3.67339,1.80385
gcp,us-central1,a2-highgpu-8g,A100,8,96,680,29.3871,14.4308
gcp,asia-northeast1,a2-highgpu-8g,A100,8,96,680,21.23111,13.18824
azure,eastus,Standard_ND96isr_H100_v5,H100,8,96,1900,98.32,
azure,eastus,Standard_NC24ads_A100_v4,A100-80GB,1,24,220,3.673,0.444433
azure,eastus,Standard_NC4as_T4_v3,T4,1,4,28,0.526,0.062699
"""


def _pages(first: Path) -> list[Path]:
    """A recording's pages in order: NAME.json (or .xml), NAME.2.json, ..."""
    pages = [first]
    n = 2
    while (nxt := first.with_name(f"{first.stem}.{n}{first.suffix}")).exists():
        pages.append(nxt)
        n += 1
    return pages


def _after(first: Path, token: str, token_of) -> Path | None:
    pages = _pages(first)
    for page, nxt in zip(pages, pages[1:]):
        if token_of(page) == token:
            return nxt
    return None


class RecordedApis(ThreadingHTTPServer):
    """Answers as the four price APIs would, from the recordings; `status` makes every answer that error."""

    daemon_threads = True

    def __init__(self, status: int | None = None, deny_spot_regions: tuple[str, ...] = ()) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = status
        self.deny_spot_regions = set(deny_spot_regions)
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def log(self, api: str, detail: str) -> None:
        with self.lock:
            self.calls.append((api, detail))


class _Handler(BaseHTTPRequestHandler):
    server: RecordedApis

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(obj).encode(), content_type)

    # ---- AWS: the JSON protocol for the Price List API, the query protocol for EC2 ----

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        target = self.headers.get("X-Amz-Target", "")
        if target:
            self.server.log("pricing", target)
            if self.server.status:
                return self._json(self.server.status, {"__type": "InternalErrorException",
                                                       "Message": "An internal error occurred"},
                                  "application/x-amz-json-1.1")
            if target != "AWSPriceListService.GetProducts":
                return self._json(400, {"__type": "UnknownOperationException"}, "application/x-amz-json-1.1")
            return self._get_products(json.loads(body))
        form = {k: v[0] for k, v in parse_qs(body).items()}
        region = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/ec2/", self.headers.get("Authorization", ""))
        region_name = region.group(1) if region else "?"
        self.server.log("ec2", f"{form.get('Action')} {region_name}")
        if self.server.status:
            return self._ec2_error(self.server.status, "InternalError", "An internal error has occurred")
        if form.get("Action") != "DescribeSpotPriceHistory":
            return self._ec2_error(400, "InvalidAction", "The action is not valid for this web service.")
        if region_name in self.server.deny_spot_regions:
            return self._ec2_error(403, "UnauthorizedOperation", "You are not authorized to perform this operation.")
        first = DATA / "aws" / "spot_price_history" / f"{region_name}.xml"
        asked = {v for k, v in form.items() if k.startswith("InstanceType.")}
        if form.get("ProductDescription.1") != "Linux/UNIX" or not first.exists() or not asked:
            return self._send(200, b'<?xml version="1.0" encoding="UTF-8"?><DescribeSpotPriceHistoryResponse '
                              b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>1</requestId>'
                              b"<spotPriceHistorySet/></DescribeSpotPriceHistoryResponse>", "text/xml")
        page = first
        if form.get("NextToken"):
            page = _after(first, form["NextToken"],
                          lambda p: (re.search(r"<nextToken>(.*?)</nextToken>", p.read_text()) or [None, None])[1])
            if page is None:
                return self._ec2_error(400, "InvalidParameterValue", "Invalid NextToken")
        self._send(200, page.read_bytes(), "text/xml;charset=UTF-8")

    def _ec2_error(self, status: int, code: str, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error></Errors><RequestID>d3c4b5a6-EXAMPLE</RequestID></Response>")
        self._send(status, body.encode(), "text/xml;charset=UTF-8")

    def _get_products(self, request: dict) -> None:
        filters = {f["Field"]: f["Value"] for f in request.get("Filters", []) if f.get("Type") == "TERM_MATCH"}
        required = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
        empty = {"FormatVersion": "aws_v1", "PriceList": []}
        if request.get("ServiceCode") != "AmazonEC2" or any(filters.get(k) != v for k, v in required.items()):
            return self._json(200, empty, "application/x-amz-json-1.1")
        first = DATA / "aws" / "get_products" / filters.get("regionCode", "?") / f"{filters.get('instanceType')}.json"
        if not first.exists():
            return self._json(200, empty, "application/x-amz-json-1.1")
        page = first
        if request.get("NextToken"):
            page = _after(first, request["NextToken"], lambda p: json.loads(p.read_text()).get("NextToken"))
            if page is None:
                return self._json(400, {"__type": "InvalidNextTokenException", "Message": "bad token"},
                                  "application/x-amz-json-1.1")
        self._send(200, page.read_bytes(), "application/x-amz-json-1.1")

    # ---- Azure Retail Prices and the Cloud Billing Catalog: plain GETs ----

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if self.server.status:
            self.server.log("get", url.path)
            return self._json(self.server.status, {"error": {"code": self.server.status, "message": "backend error"}})
        if url.path == "/api/retail/prices":
            return self._retail(query)
        if url.path == "/v1/services/6F81-5844-456A/skus":
            return self._skus(query)
        self._json(404, {"error": {"code": 404, "message": "not found"}})

    def _retail(self, query: dict) -> None:
        self.server.log("azure", query.get("$filter", ""))
        wanted = re.fullmatch(r"serviceName eq 'Virtual Machines' and armSkuName eq '(.+?)' "
                              r"and armRegionName eq '(.+?)'", query.get("$filter", ""))
        if query.get("api-version") != "2023-01-01-preview" or wanted is None:
            return self._json(400, {"Error": {"Code": "InvalidQuery", "Message": "bad query"}})
        first = DATA / "azure" / wanted.group(2) / f"{wanted.group(1)}.json"
        if not first.exists():
            return self._json(200, {"BillingCurrency": "USD", "CustomerEntityId": "Default",
                                    "CustomerEntityType": "Retail", "Items": [], "NextPageLink": None, "Count": 0})
        page = first if "$skip" not in query else _pages(first)[1]
        text = page.read_text().replace("https://prices.azure.com:443", self.server.url)
        self._send(200, text.encode(), "application/json; charset=utf-8")

    def _skus(self, query: dict) -> None:
        self.server.log("gcp", query.get("pageToken", ""))
        if self.headers.get("X-Goog-Api-Key") != GCP_KEY:
            return self._json(400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                                              "status": "INVALID_ARGUMENT"}})
        first = DATA / "gcp" / "skus.json"
        page = first
        if query.get("pageToken"):
            page = _after(first, query["pageToken"], lambda p: json.loads(p.read_text()).get("nextPageToken"))
            if page is None:
                return self._json(400, {"error": {"code": 400, "message": "Invalid page token",
                                                  "status": "INVALID_ARGUMENT"}})
        self._send(200, page.read_bytes(), "application/json; charset=UTF-8")


@pytest.fixture
def apis():
    servers: list[RecordedApis] = []

    def start(**kwargs) -> RecordedApis:
        server = RecordedApis(**kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def refresh(*args: str, home: Path, aws: str | None = None, azure: str | None = None, gcp: str | None = None,
            gcp_key: str | None = GCP_KEY, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPILLOVER_", "GOOGLE_"))}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", HOME=str(home), NO_PROXY="*", no_proxy="*",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing-secret",
               AWS_CONFIG_FILE=str(home / "no-aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-creds"),
               AWS_EC2_METADATA_DISABLED="true", NO_GCE_CHECK="True")
    if gcp_key:
        env["SPILLOVER_GCP_API_KEY"] = gcp_key
    for name, value in (("SPILLOVER_AWS_ENDPOINT", aws), ("SPILLOVER_AZURE_PRICES_URL", azure and
                        f"{azure}/api/retail/prices"), ("SPILLOVER_GCP_BILLING_URL", gcp)):
        if value:
            env[name] = value
    return subprocess.run([sys.executable, "-m", "spillover.scheduler.cli", "prices", "refresh", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or home, timeout=120)


def rows(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(r["cloud"], r["region"], r["instance_type"]): r for r in csv.DictReader(path.read_text().splitlines())}


def price(table, cloud: str, region: str, instance_type: str, spot: bool = False) -> float | None:
    text = table[(cloud, region, instance_type)]["spot_usd_per_hour" if spot else "on_demand_usd_per_hour"]
    return float(text) if text else None


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def current(tmp_path: Path) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(CURRENT)
    return path


def test_every_cloud_is_repriced_from_its_recorded_api(apis, home, current):
    bundled = digest(BUNDLED_CATALOG)
    server = apis(deny_spot_regions=("us-west-2",))
    result = refresh("--out", str(current), home=home, aws=server.url, azure=server.url, gcp=server.url)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)

    PriceCatalog.load(current)  # the written catalog is valid
    new, old = rows(current), {k: r for k, r in rows_of_text(CURRENT).items()}
    assert list(new) == list(old), "the same rows, in the same order"
    for key, row in new.items():
        assert [row[c] for c in HARDWARE] == [old[key][c] for c in HARDWARE]

    # AWS on-demand: the p5 us-east-1 price is on GetProducts' second page, after a Capacity Block product
    assert price(new, "aws", "us-east-1", "p5.48xlarge") == 55.04
    assert price(new, "aws", "us-east-1", "p4d.24xlarge") == pytest.approx(21.6234)
    assert price(new, "aws", "us-east-1", "g4dn.xlarge") == pytest.approx(0.5371)
    # AWS spot: median across zones of each zone's latest price; zones c and d came on the second page
    assert price(new, "aws", "us-east-1", "p5.48xlarge", spot=True) == pytest.approx((17.1523 + 17.9011) / 2)
    assert price(new, "aws", "us-east-1", "p4d.24xlarge", spot=True) == pytest.approx(8.3071)
    assert price(new, "aws", "us-east-1", "g4dn.xlarge", spot=True) == pytest.approx(0.2104)
    # us-west-2's spot history was refused: on-demand refreshed, the previous spot price kept, with a warning
    assert price(new, "aws", "us-west-2", "p5.48xlarge", spot=True) == 12.6935
    # p3.2xlarge is not listed: its row is kept as it was
    assert new[("aws", "us-east-1", "p3.2xlarge")] == old[("aws", "us-east-1", "p3.2xlarge")]

    # Azure: Windows and Low Priority meters ignored; the T4 meters are on the second page
    assert price(new, "azure", "eastus", "Standard_NC24ads_A100_v4") == 3.673
    assert price(new, "azure", "eastus", "Standard_NC24ads_A100_v4", spot=True) == pytest.approx(0.4587)
    assert price(new, "azure", "eastus", "Standard_NC4as_T4_v3") == pytest.approx(0.541)
    assert price(new, "azure", "eastus", "Standard_NC4as_T4_v3", spot=True) == pytest.approx(0.0648)
    assert price(new, "azure", "eastus", "Standard_ND96isr_H100_v5") == pytest.approx(97.88)
    assert price(new, "azure", "eastus", "Standard_ND96isr_H100_v5", spot=True) is None  # spot = on-demand

    # GCP: gpus x GPU + vcpus x core + memory x RAM, from SKUs on both pages
    skus = gcp_unit_prices()
    for region, itype, gpus, vcpus, mem, gpu, family, where in (
        ("us-central1", "a2-highgpu-1g", 1, 12, 85, "Nvidia Tesla A100 GPU", "A2", ("Americas", "Americas")),
        ("us-central1", "a2-highgpu-8g", 8, 96, 680, "Nvidia Tesla A100 GPU", "A2", ("Americas", "Americas")),
        ("asia-northeast1", "a2-highgpu-8g", 8, 96, 680, "Nvidia Tesla A100 GPU", "A2", ("Tokyo", "Japan")),
        ("us-central1", "a3-highgpu-8g", 8, 208, 1872, "Nvidia H100 80GB GPU", "A3", ("Americas", "Americas")),
    ):
        on_demand = (gpus * skus[f"{gpu} running in {where[0]}"] + vcpus * skus[f"{family} Instance Core running in "
                     f"{where[1]}"] + mem * skus[f"{family} Instance Ram running in {where[1]}"])
        spot = (gpus * skus[f"{gpu} attached to Spot Preemptible VMs running in {where[0]}"]
                + vcpus * skus[f"Spot Preemptible {family} Instance Core running in {where[1]}"]
                + mem * skus[f"Spot Preemptible {family} Instance Ram running in {where[1]}"])
        assert price(new, "gcp", region, itype) == pytest.approx(on_demand, abs=1e-6)
        assert price(new, "gcp", region, itype, spot=True) == pytest.approx(spot, abs=1e-6)
    assert price(new, "gcp", "us-central1", "a2-highgpu-1g") == pytest.approx(2.868 + 12 * 0.0309 + 85 * 0.00414)
    assert price(new, "gcp", "asia-northeast1", "a2-highgpu-8g") == pytest.approx(21.5092)

    lines = warnings(result.stderr)
    assert any("aws" in w and "us-west-2 spot prices not read" in w and "UnauthorizedOperation" in w for w in lines)
    assert any("aws" in w and "p3.2xlarge in us-east-1: not listed by the API; kept the previous price" in w
               for w in lines)
    assert len(lines) == 2, lines
    # the summary: per cloud counts and the biggest changes
    summary = re.search(r"│ aws\s+│ ok, 2 warnings\s+│\s+5 │\s+3 │\s+1 │\s+1 │\s+(\d+) │", result.stdout)
    assert summary, result.stdout
    assert int(summary.group(1)) == 5 + 1 + 2 + 1, "GetProducts per row (+1 page), spot history per region (+1 page)"
    assert re.search(r"│ gcp\s+│ ok\s+│\s+4 │\s+4 │\s+0 │\s+0 │\s+2 │", result.stdout), result.stdout
    assert re.search(r"│ azure\s+│ ok\s+│\s+3 │\s+3 │\s+0 │\s+0 │\s+4 │", result.stdout), result.stdout
    assert "biggest price changes" in result.stdout
    assert digest(BUNDLED_CATALOG) == bundled


def rows_of_text(text: str):
    return {(r["cloud"], r["region"], r["instance_type"]): r for r in csv.DictReader(text.splitlines())}


def gcp_unit_prices() -> dict[str, float]:
    found = {}
    for name in ("skus.json", "skus.2.json"):
        for sku in json.loads((DATA / "gcp" / name).read_text())["skus"]:
            money = sku["pricingInfo"][-1]["pricingExpression"]["tieredRates"][0]["unitPrice"]
            found[sku["description"]] = int(money.get("units", 0)) + money.get("nanos", 0) / 1e9
    return found


def test_a_failing_cloud_keeps_its_previous_rows_and_the_others_are_refreshed(apis, home, current):
    good, broken = apis(), apis(status=500)
    result = refresh("--out", str(current), home=home, aws=broken.url, azure=closed_port_url(), gcp=good.url)
    assert result.returncode == 0, "partial success: GCP was refreshed"
    assert_no_traceback(result)
    new, old = rows(current), rows_of_text(CURRENT)
    for key in old:
        if key[0] in ("aws", "azure"):
            assert new[key] == old[key]
    assert price(new, "gcp", "us-central1", "a2-highgpu-8g") != price(old, "gcp", "us-central1", "a2-highgpu-8g")
    lines = warnings(result.stderr)
    assert len(lines) == 2, lines
    aws_line = next(w for w in lines if w.startswith("warning: aws:"))
    assert "kept its previous rows" in aws_line and "http: InternalErrorException (HTTP 500)" in aws_line
    azure_line = next(w for w in lines if w.startswith("warning: azure:"))
    assert "unreachable: cannot reach http://127.0.0.1:" in azure_line and "connection refused" in azure_line
    assert re.search(r"│ aws\s+│ failed\s+│\s+5 │\s+0 │\s+0 │\s+5 │", result.stdout), result.stdout


def test_when_every_cloud_fails_nothing_is_written_and_the_exit_code_says_so(apis, home, current):
    broken = apis(status=503)
    before = current.stat().st_mtime_ns
    result = refresh("--out", str(current), home=home, aws=closed_port_url(), azure=broken.url, gcp=broken.url)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert current.read_text() == CURRENT and current.stat().st_mtime_ns == before
    assert [w.split(":")[1].strip() for w in warnings(result.stderr)] == ["aws", "gcp", "azure"]
    assert "nothing written" in result.stdout
    assert not list(current.parent.glob(".prices.csv.*")), "no temporary file left behind"


def test_a_bad_gcp_key_is_an_auth_warning_that_never_shows_the_key(apis, home, current):
    server = apis()
    result = refresh("--out", str(current), "--cloud", "gcp", home=home, gcp=server.url,
                     gcp_key="AIzaSy-wrong-key-do-not-print")
    assert result.returncode == 1, "the only cloud asked for failed"
    (line,) = warnings(result.stderr)
    assert line.startswith("warning: gcp: prices not refreshed") and "auth: HTTP 400" in line
    assert "API key not valid" in line
    assert "do-not-print" not in result.stderr + result.stdout


def test_by_default_the_bundled_catalog_is_read_and_the_copy_goes_to_the_home_directory(apis, home):
    bundled = digest(BUNDLED_CATALOG)
    server = apis()
    result = refresh("--cloud", "gcp", home=home, gcp=server.url)
    assert result.returncode == 0, result.stderr
    written = home / ".spillover" / "gpu_instances.csv"
    assert written.exists() and f"wrote {written}" in result.stdout.replace("\n", "")
    assert digest(BUNDLED_CATALOG) == bundled
    new, old = rows(written), rows(BUNDLED_CATALOG)
    assert list(new) == list(old)
    assert all(new[k] == old[k] for k in old if k[0] != "gcp"), "clouds not asked for are copied as they are"
    assert price(new, "gcp", "us-central1", "a3-highgpu-8g") == pytest.approx(8 * 4.3635 + 208 * 0.025 + 1872 * 0.0016)
    assert not warnings(result.stderr)


def test_the_configs_catalog_is_read_and_replaced(apis, tmp_path, home, current):
    config = tmp_path / "spillover.yaml"
    config.write_text(yaml.safe_dump({"apiVersion": "spillover/v1alpha1", "kind": "SpilloverConfig",
                                      "prices": {"catalog": current.name}}))
    other = tmp_path / "elsewhere.csv"
    other.write_text("not a catalog")
    server = apis()
    result = refresh("--config", str(config), "--cloud", "azure", home=home, azure=server.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    new = rows(current)
    assert price(new, "azure", "eastus", "Standard_NC4as_T4_v3") == pytest.approx(0.541)
    assert price(new, "gcp", "us-central1", "a2-highgpu-8g") == 29.3871
    assert not (home / ".spillover").exists()


def test_a_config_naming_the_bundled_catalog_does_not_overwrite_it(tmp_path, home):
    config = tmp_path / "spillover.yaml"
    config.write_text(yaml.safe_dump({"prices": {"catalog": str(BUNDLED_CATALOG)}}))
    result = refresh("--config", str(config), home=home)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "never overwrites it unless --out names it" in line


@pytest.mark.parametrize("value", ["ibm", "aws,oracle"])
def test_an_unknown_cloud_is_one_line_exit_2_naming_the_valid_ones(home, value):
    result = refresh("--cloud", value, home=home)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: unknown cloud") and "valid clouds: aws, gcp, azure" in line
    assert not (home / ".spillover").exists()


def test_a_broken_current_catalog_is_a_one_line_error(home, current):
    current.write_text(CURRENT.replace("55.04,17.6289", "cheap,17.6289", 1))
    result = refresh("--out", str(current), home=home, aws=closed_port_url())
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "line 2" in line and "remove it to start from the bundled catalog" in line


def test_without_an_api_key_gcp_needs_application_default_credentials(apis, home, current):
    server = apis()
    result = refresh("--out", str(current), "--cloud", "gcp", home=home, gcp=server.url, gcp_key=None)
    assert result.returncode == 1
    assert_no_traceback(result)
    (line,) = warnings(result.stderr)
    assert "auth: no Application Default Credentials" in line and "--gcp-api-key" in line
    assert server.calls == [], "nothing is asked without credentials"


# ---- the parsers on their own ----


def test_gcp_sku_descriptions_name_the_part_and_whether_it_is_spot():
    from spillover.providers.prices.gcp import sku_name

    assert sku_name("Nvidia Tesla T4 GPU running in Americas", "OnDemand") == ("Nvidia Tesla T4 GPU", False)
    assert sku_name("Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in Americas", "Preemptible") == (
        "Nvidia Tesla T4 GPU", True)
    assert sku_name("Spot Preemptible A2 Instance Core running in Japan", "Preemptible") == ("A2 Instance Core", True)
    assert sku_name("Preemptible N1 Predefined Instance Ram running in Americas", "Preemptible") == (
        "N1 Predefined Instance Ram", True)
    assert sku_name("Commitment v1: A2 Cpu in Americas for 1 Year", "Commit1Yr") is None
    assert sku_name("A2 Instance Core running in Americas", "Preemptible") is None, "usage type and name disagree"


def test_a_gcp_machine_type_without_a_mapping_keeps_its_price_with_a_reason():
    from spillover.providers.prices import RowSpec
    from spillover.providers.prices.gcp import fetch

    row = RowSpec("us-central1", "a4-highgpu-8g", "B200", 8, 224, 3968)
    result = fetch([row], base_url=closed_port_url(), api_key="unused")
    assert result.quotes == {} and result.requests == 0
    assert "no SKU mapping for a4-highgpu-8g with B200" in result.reasons[row.key]


def test_azure_picks_linux_pay_as_you_go_and_spot_meters():
    from spillover.providers.prices.azure import RetailItem, quote

    page = json.loads((DATA / "azure" / "eastus" / "Standard_NC24ads_A100_v4.json").read_text())["Items"]
    assert quote([RetailItem.model_validate(i) for i in page], "eastus", "Standard_NC24ads_A100_v4") == (3.673, 0.4587)
    windows_only = [RetailItem.model_validate(i) for i in page if "Windows" in i["productName"]]
    assert quote(windows_only, "eastus", "Standard_NC24ads_A100_v4") is None
