"""The config file: the example loads, and every kind of mistake is reported at once with its field path."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from spillover.providers.catalog import COLUMNS, PriceCatalog
from spillover.scheduler.config import (
    EXAMPLE_CONFIG,
    CloudCluster,
    OnPremCluster,
    SpilloverConfig,
    load_config,
    main,
    parse_config,
)
from spillover.scheduler.errors import ConfigError, UnknownClusterError, UnknownQueueError, UserError
from spillover.scheduler.model import Cloud, ClusterKind

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.json"
EXAMPLE = yaml.safe_load(EXAMPLE_CONFIG.read_text())
AWS = 2  # index of the aws cluster in the example's clusters


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def errors_of(data: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "spillover.yaml", **kwargs)
    return info.value.errors


def changed(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    data = example()
    change(data)
    return data


@pytest.fixture(scope="module")
def config() -> SpilloverConfig:
    return load_config(EXAMPLE_CONFIG)


# ---- the example ----


def test_example_config_has_the_demo_shape(config: SpilloverConfig) -> None:
    assert [c.name for c in config.onprem_clusters] == ["onprem-a", "onprem-b"]
    assert {c.cloud for c in config.cloud_clusters} == {Cloud.AWS, Cloud.GCP, Cloud.AZURE}
    assert config.cluster("onprem-a").total_gpus == 48
    assert config.cluster("onprem-a").kind == ClusterKind.ONPREM
    assert config.store.url == "sqlite:///spillover-demo.db"
    assert config.policy.max_cloud_gpus == 96


def test_pools_are_filled_from_the_catalog(config: SpilloverConfig) -> None:
    pools = {p.id: p for p in config.pools()}
    spot = pools["aws-use1/p4d-spot"]
    assert (spot.gpu_type, spot.gpus_per_node, spot.cpu_per_node, spot.memory_gib_per_node) == ("A100", 8, 96, 1152)
    assert spot.price_per_hour == 8.1915
    assert pools["aws-use1/p4d"].price_per_hour == 21.957642
    assert pools["azure-eus/nc24ads-spot"].gpu_type == "A100-80GB"
    for pool in pools.values():
        assert None not in (pool.gpu_type, pool.gpus_per_node, pool.cpu_per_node, pool.memory_gib_per_node,
                            pool.price_per_hour), pool.id


def test_a_given_price_overrides_the_catalog(config: SpilloverConfig) -> None:
    pool = next(p for p in config.pools() if p.id == "gcp-usc1/a2-1g")
    assert pool.price_per_hour == 3.30
    assert config.catalog.offer("gcp", "us-central1", "a2-highgpu-1g", False).price_per_hour != 3.30


def test_value_of_time_is_the_queue_override_else_the_policy(config: SpilloverConfig) -> None:
    assert config.value_of_time("prod") == 12.0
    assert config.value_of_time("research") == 4.0


def test_gpu_speed_defaults_to_one(config: SpilloverConfig) -> None:
    assert config.speed("H100") == 2.0
    assert config.speed("MI300X") == 1.0


def test_team_defaults_to_the_queue_name() -> None:
    data = example()
    data["queues"] = [{"name": "solo"}]
    assert parse_config(data).queue("solo").team == "solo"


def test_unknown_queue_and_cluster_name_what_exists(config: SpilloverConfig) -> None:
    with pytest.raises(UnknownQueueError) as info:
        config.queue("reserch")
    assert str(info.value) == (
        "unknown queue 'reserch' (did you mean 'research'?); configured queues: research, prod, vision, batch-eval"
    )
    with pytest.raises(UnknownClusterError, match="configured clusters: onprem-a, onprem-b, aws-use1"):
        config.cluster("onprem-c")


def test_store_password_stays_out_of_the_repr() -> None:
    data = example()
    data["store"] = {"url": "postgresql://spill:s3cret@db.internal/spillover"}
    config = parse_config(data)
    assert config.store.url == "postgresql+psycopg://spill:s3cret@db.internal/spillover"
    assert "s3cret" not in repr(config)


def test_cloud_clusters_and_pools_are_the_discriminated_types(config: SpilloverConfig) -> None:
    kinds = {c.name: type(c) for c in config.clusters}
    assert kinds["onprem-b"] is OnPremCluster and kinds["gcp-usc1"] is CloudCluster


# ---- every kind of mistake ----


def pool(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return data["clusters"][AWS]["pools"][index]


BAD = [
    pytest.param(
        lambda d: d.update(kind="TrainingJob"),
        ["kind: must be one of 'SpilloverConfig' (got 'TrainingJob')"],
        id="wrong-kind",
    ),
    pytest.param(
        lambda d: d.update(apiVersion="spillover/v2"),
        ["apiVersion: must be one of 'spillover/v1alpha1' (got 'spillover/v2')"],
        id="wrong-api-version",
    ),
    pytest.param(
        lambda d: d["clusters"][0].update(kind="edge"),
        ["clusters[0].kind: must be one of 'onprem', 'cloud' (got 'edge')"],
        id="wrong-cluster-kind",
    ),
    pytest.param(
        lambda d: d["clusters"][0].pop("kind"),
        ["clusters[0].kind: required; one of 'onprem', 'cloud'"],
        id="missing-cluster-kind",
    ),
    pytest.param(
        lambda d: d["queues"].append({"name": "prod"}),
        ["queues[4].name: duplicate queue name 'prod' (also queues[1]); names must be unique"],
        id="duplicate-queue",
    ),
    pytest.param(
        lambda d: d["clusters"][3].update(name="aws-use1"),
        ["clusters[3].name: duplicate cluster name 'aws-use1' (also clusters[2]); names must be unique"],
        id="duplicate-cluster",
    ),
    pytest.param(
        lambda d: pool(d, 1).update(name="p4d"),
        ["clusters[2].pools[1].name: duplicate pool name 'p4d' (also pools[0]); names must be unique"],
        id="duplicate-pool",
    ),
    pytest.param(
        lambda d: pool(d).update(instance_type="p4d.24xl"),
        [
            "clusters[2].pools[0].instance_type: unknown instance type 'p4d.24xl' in aws us-east-1 "
            "(did you mean 'p4d.24xlarge'?); valid: g4dn.xlarge, g5.24xlarge, g6.16xlarge, p3.16xlarge, "
            "p3.2xlarge, p3dn.24xlarge, p4d.24xlarge, p4de.24xlarge, p5.48xlarge, p5.4xlarge"
        ],
        id="unknown-instance-type",
    ),
    pytest.param(
        lambda d: pool(d).update(instance_type="p5.4xlarge", spot=True),
        ["clusters[2].pools[0].spot: no spot price listed for p5.4xlarge in aws us-east-1; use spot: false"],
        id="spot-without-spot-price",
    ),
    pytest.param(
        lambda d: pool(d).update(min_nodes=5, max_nodes=2),
        ["clusters[2].pools[0].max_nodes: must be at least min_nodes (5) (got 2)"],
        id="min-above-max",
    ),
    pytest.param(
        lambda d: pool(d).update(maxNodes=2),
        [
            "clusters[2].pools[0].maxNodes: unknown key (did you mean 'max_nodes'?); valid keys: name, "
            "instance_type, spot, min_nodes, max_nodes, provisioning_delay_s, provisioning_timeout_s, gpu_type, "
            "gpus_per_node, cpu_per_node, memory_gib_per_node, price_per_hour"
        ],
        id="unknown-pool-key",
    ),
    pytest.param(
        lambda d: d.update(budget=100),
        ["budget: unknown key; valid keys: apiVersion, kind, store, loop, api, prices, gpu_speeds, queues, clusters, policy, teams, fair_share, preemption"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        lambda d: d["clusters"][AWS].update(cloud="amazon"),
        ["clusters[2].cloud: must be one of 'aws', 'gcp' or 'azure' (got 'amazon')"],
        id="bad-cloud",
    ),
    pytest.param(
        lambda d: d["policy"].update(allowed_clouds=["aws", "ibm"]),
        ["policy.allowed_clouds[1]: must be one of 'aws', 'gcp' or 'azure' (got 'ibm')"],
        id="bad-allowed-cloud",
    ),
    pytest.param(
        lambda d: d["clusters"][AWS].update(region="us-east-9"),
        [
            "clusters[2].region: no prices for aws region 'us-east-9' in the catalog; "
            "regions listed for aws: ap-northeast-1, us-east-1, us-west-2"
        ],
        id="unpriced-region",
    ),
    pytest.param(
        lambda d: d["policy"].update(allowed_regions=["mars-1"]),
        ["policy.allowed_regions[0]: unknown region 'mars-1'; regions in the price catalog: ap-northeast-1, "
         "asia-northeast1, eastus, us-central1, us-east-1, us-west-2"],
        id="unknown-allowed-region",
    ),
    pytest.param(
        lambda d: pool(d).update(gpu_type="H100"),
        ["clusters[2].pools[0].gpu_type: must match the price catalog, which lists A100 for p4d.24xlarge "
         "(got 'H100'); leave it out to take the catalog's"],
        id="hardware-disagrees-with-catalog",
    ),
    pytest.param(lambda d: d.update(queues=[]), ["queues: must have at least 1 item (got 0)"], id="no-queues"),
    pytest.param(
        lambda d: d["queues"][0].update(name="Research_Team"),
        ["queues[0].name: must be a DNS label: lower-case letters, digits and '-', starting and ending with a "
         "letter or digit (got 'Research_Team')"],
        id="queue-name-not-dns",
    ),
    pytest.param(
        lambda d: d["clusters"][0].update(provider="k8s"),
        ["clusters[0].provider: must be one of 'simulated' or 'kubernetes' (got 'k8s')"],
        id="bad-provider",
    ),
    pytest.param(
        lambda d: d["clusters"][1]["node_groups"][0].update(count=0),
        ["clusters[1].node_groups[0].count: must be at least 1 (got 0)"],
        id="empty-node-group",
    ),
    pytest.param(
        lambda d: d["store"].update(url="mysql://db/spillover"),
        ["store.url: must be a SQLAlchemy URL like sqlite:///spillover.db or "
         "postgresql+psycopg://user:pass@host/db (got the mysql dialect)"],
        id="unsupported-database",
    ),
    pytest.param(
        lambda d: d["loop"].update(interval_s=0),
        ["loop.interval_s: must be greater than 0 (got 0)"],
        id="zero-interval",
    ),
    pytest.param(
        lambda d: d["gpu_speeds"].update(H100=0),
        ["gpu_speeds.H100: must be greater than 0 (got 0)"],
        id="zero-speed",
    ),
    pytest.param(
        lambda d: d["policy"].update(max_cloud_gpus="lots"),
        ["policy.max_cloud_gpus: must be a whole number (got 'lots')"],
        id="cap-not-a-number",
    ),
    pytest.param(lambda d: d.update(queues="research"), ["queues: must be a list (got 'research')"], id="not-a-list"),
]


@pytest.mark.parametrize(("change", "expected"), BAD)
def test_each_mistake_names_the_field_and_what_is_valid(change: Callable[..., Any], expected: list[str]) -> None:
    assert errors_of(changed(change)) == expected


def test_all_errors_are_reported_at_once() -> None:
    def many(d: dict[str, Any]) -> None:
        d.update(kind="Config", budget=1)
        d["queues"].append({"name": "research"})
        d["clusters"][0]["node_groups"][0].update(gpus_per_node=0)
        d["clusters"][AWS].update(region="us-east-9")
        d["clusters"][3]["pools"][0].update(instance_type="a9-huge")
        d["clusters"][4]["pools"][1].update(min_nodes=9, max_nodes=1)
        d["policy"].update(allowed_clouds=["oracle"])

    errors = errors_of(changed(many))
    paths = sorted(e.split(": ")[0] for e in errors)
    assert paths == sorted([
        "kind",
        "budget",
        "queues[4].name",
        "clusters[0].node_groups[0].gpus_per_node",
        "clusters[2].region",
        "clusters[3].pools[0].instance_type",
        "clusters[4].pools[1].max_nodes",
        "policy.allowed_clouds[0]",
    ])


def test_config_error_is_one_line_prefixed_by_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spillover.yaml"
    data = changed(lambda d: (d.update(kind="X"), pool(d).update(max_nodes=-1)))
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"{path}: kind: must be one of 'SpilloverConfig' (got 'X'); "
        "clusters[2].pools[0].max_nodes: must be at least 0 (got -1)"
    )
    assert isinstance(info.value, UserError) and info.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "expected one SpilloverConfig document (found nothing)", id="empty"),
        pytest.param("a: [1\n", "not valid YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1",
                     id="not-yaml"),
        pytest.param("kind: SpilloverConfig\nkind: SpilloverConfig\n",
                     "not valid YAML: duplicate key 'kind' (first given on line 1) at line 2, column 1",
                     id="duplicate-key"),
        pytest.param("- 1\n- 2\n", "must be a mapping with apiVersion: spillover/v1alpha1 and kind: SpilloverConfig "
                     "(got a list)", id="a-list"),
        pytest.param("a: 1\n---\nb: 2\n", "expected one SpilloverConfig document (found 2 YAML documents)",
                     id="two-documents"),
    ],
)
def test_unreadable_config_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "spillover.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in info.value.errors[0]
    assert str(info.value).startswith(f"{path}: ")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such file"


# ---- prices from a pinned catalog ----


def pinned_catalog(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([",".join(COLUMNS), *rows]) + "\n")
    return path


SMALL_CONFIG = {
    "queues": [{"name": "q"}],
    "clusters": [{
        "name": "aws", "kind": "cloud", "cloud": "aws", "region": "us-east-1",
        "pools": [{"name": "p", "instance_type": "p4d.24xlarge", "spot": True, "max_nodes": 2}],
    }],
}


def test_prices_catalog_is_read_relative_to_the_config_file(tmp_path: Path) -> None:
    pinned_catalog(tmp_path / "prices.csv", "aws,us-east-1,p4d.24xlarge,A100,8,96,1152,20.0,5.0")
    path = tmp_path / "spillover.yaml"
    path.write_text(yaml.safe_dump({**SMALL_CONFIG, "prices": {"catalog": "prices.csv"}}))
    config = load_config(path)
    assert config.clusters[0].pools[0].price_per_hour == 5.0
    assert config.catalog.instance_types("aws", "us-east-1") == ["p4d.24xlarge"]


def test_instance_types_are_checked_against_the_configured_catalog(tmp_path: Path) -> None:
    catalog = PriceCatalog.load(pinned_catalog(tmp_path / "prices.csv", "aws,us-east-1,p3.2xlarge,V100,1,8,61,3,"))
    errors = errors_of(SMALL_CONFIG, catalog=catalog)
    assert errors == [
        "clusters[0].pools[0].instance_type: unknown instance type 'p4d.24xlarge' in aws us-east-1 "
        "(did you mean 'p3.2xlarge'?); valid: p3.2xlarge"
    ]


def test_a_broken_catalog_is_reported_at_prices_catalog(tmp_path: Path) -> None:
    pinned_catalog(tmp_path / "prices.csv", "aws,us-east-1,p4d.24xlarge,A100,8,96,1152,cheap,")
    path = tmp_path / "spillover.yaml"
    path.write_text(yaml.safe_dump({**SMALL_CONFIG, "prices": {"catalog": "prices.csv"}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [
        f"prices.catalog: {tmp_path / 'prices.csv'} line 2: on_demand_usd_per_hour: must be a number (got 'cheap')"
    ]


# ---- the JSON schema and the command line ----


def test_schema_file_is_current() -> None:
    assert json.loads(SCHEMA.read_text()) == SpilloverConfig.model_json_schema(), (
        "config/schema.json is stale; regenerate it with: python -m spillover.scheduler.config --schema > config/schema.json"
    )


def test_checking_a_config_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(EXAMPLE_CONFIG)]) == 0
    assert "ok (4 queues, 5 clusters, 7 cloud pools)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(changed(lambda d: d["clusters"][AWS].update(cloud="amazon"))))
    failed = subprocess.run([sys.executable, "-m", "spillover.scheduler.config", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 2
    assert failed.stderr == f"{bad}: clusters[2].cloud: must be one of 'aws', 'gcp' or 'azure' (got 'amazon')\n"
