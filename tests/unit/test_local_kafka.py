"""The pure parts of the local broker command: addresses, generated files, version checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_app.settings import Settings
from stream_app.tools.local_kafka import (
    KAFKA_VERSION,
    LOG4J_VERSION,
    Address,
    AddressError,
    BrokerPaths,
    Layout,
    LocalKafkaError,
    configured_address,
    formatted_cluster_id,
    java_major_version,
    log4j2_properties,
    parse_loopback_address,
    pom_xml,
    run,
    server_properties,
)


def parse_properties(text: str) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:9092", Address("127.0.0.1", 9092)),
        (" 127.0.0.1:19192 ", Address("127.0.0.1", 19192)),
        ("127.0.0.2:9092", Address("127.0.0.2", 9092)),
        ("localhost:9092", Address("127.0.0.1", 9092)),
        ("127.0.0.1", Address("127.0.0.1", 9092)),
        ("[::1]:9092", Address("::1", 9092)),
    ],
)
def test_loopback_addresses_are_accepted(bootstrap: str, expected: Address) -> None:
    assert parse_loopback_address(bootstrap) == expected


@pytest.mark.parametrize(
    ("bootstrap", "says"),
    [
        ("10.0.0.5:9092", "only listens on loopback"),
        ("0.0.0.0:9092", "only listens on loopback"),
        ("kafka.example.com:9092", "only listens on loopback"),
        ("127.0.0.1:9092,127.0.0.1:9093", "one host:port"),
        ("", "one host:port"),
        ("127.0.0.1:0", "port 0"),
        ("127.0.0.1:65535", "controller takes port + 1"),
        ("127.0.0.1:http", "not host:port"),
    ],
)
def test_other_addresses_are_refused_in_one_line(bootstrap: str, says: str) -> None:
    with pytest.raises(AddressError, match=re.escape(says)) as caught:
        parse_loopback_address(bootstrap)
    assert "\n" not in str(caught.value)


def test_ipv6_addresses_are_bracketed_in_listeners() -> None:
    address = Address("::1", 9092)
    assert str(address) == "[::1]:9092"
    assert address.netloc(address.controller_port) == "[::1]:9093"


def test_server_properties_describe_a_single_node_kraft_broker(tmp_path: Path) -> None:
    props = parse_properties(server_properties(Address("127.0.0.1", 19192), tmp_path / "kraft"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19193"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19192,CONTROLLER://127.0.0.1:19193"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19192"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert props["num.partitions"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    # Left to Kafka's default (on): clients that create topics on first use still work.
    assert "auto.create.topics.enable" not in props


def test_a_cluster_of_three_takes_two_ports_per_node_from_the_first() -> None:
    layout = Layout(Address("127.0.0.1", 39200), 3)
    assert [layout.address(node) for node in layout.node_ids] == [
        Address("127.0.0.1", 39200),
        Address("127.0.0.1", 39202),
        Address("127.0.0.1", 39204),
    ]
    assert layout.voters == "1@127.0.0.1:39201,2@127.0.0.1:39203,3@127.0.0.1:39205"


def test_each_node_of_a_cluster_has_its_own_id_listeners_and_log_dir(tmp_path: Path) -> None:
    layout = Layout(Address("127.0.0.1", 39200), 3)
    nodes = BrokerPaths(tmp_path / "kafka").nodes(layout)
    assert [node for node, _, _ in nodes] == [1, 2, 3]
    every = []
    for node, paths, address in nodes:
        assert paths.root == tmp_path / "kafka" / f"node-{node}"
        props = parse_properties(server_properties(address, paths.log_dir, None, layout, node))
        every.append(props)
        port = 39200 + 2 * (node - 1)
        assert props["node.id"] == str(node)
        assert props["process.roles"] == "broker,controller"
        assert props["controller.quorum.voters"] == layout.voters
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}"
        )
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{port}"
        assert props["log.dirs"] == str(tmp_path / "kafka" / f"node-{node}" / "kraft-logs")
        # Kafka's own topics, and any topic created without settings, survive one lost node.
        for key in (
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "share.coordinator.state.topic.replication.factor",
            "default.replication.factor",
        ):
            assert props[key] == "3", key
        for key in (
            "transaction.state.log.min.isr",
            "share.coordinator.state.topic.min.isr",
            "min.insync.replicas",
        ):
            assert props[key] == "2", key
    assert len({props["log.dirs"] for props in every}) == 3


def test_a_single_broker_keeps_its_files_and_properties(tmp_path: Path) -> None:
    address = Address("127.0.0.1", 19192)
    root = BrokerPaths(tmp_path / "kafka")
    assert root.nodes(Layout(address)) == [(1, root, address)]
    assert server_properties(address, root.log_dir) == server_properties(
        address, root.log_dir, None, Layout(address, 1), 1
    )
    props = parse_properties(server_properties(address, root.log_dir))
    assert "min.insync.replicas" not in props
    assert "default.replication.factor" not in props


def test_a_cluster_may_end_on_the_last_port() -> None:
    assert Layout(Address("127.0.0.1", 65530), 3).address(3).controller_port == 65535


@pytest.mark.parametrize(
    ("port", "size", "says"),
    [
        (65531, 3, "need ports up to 65536"),
        (9092, 0, "--brokers takes 1 to"),
        (9092, 10, "--brokers takes 1 to"),
    ],
)
def test_cluster_layouts_that_do_not_fit(port: int, size: int, says: str) -> None:
    with pytest.raises(LocalKafkaError, match=re.escape(says)) as caught:
        Layout(Address("127.0.0.1", port), size)
    assert "\n" not in str(caught.value)


def test_the_cluster_id_is_read_from_a_formatted_node() -> None:
    meta = "#\nnode.id=2\nversion=1\ncluster.id=q1Sh-9_ISia_zwGINzRvyQ\ndirectory.id=x\n"
    assert formatted_cluster_id(meta) == "q1Sh-9_ISia_zwGINzRvyQ"
    assert formatted_cluster_id("version=1\n") is None


def test_the_advertised_address_is_read_back_from_the_properties(tmp_path: Path) -> None:
    for address in (Address("127.0.0.1", 19192), Address("::1", 9092)):
        assert configured_address(server_properties(address, tmp_path)) == str(address)
    assert configured_address("node.id=1\n") is None


def test_log4j_config_logs_info_to_the_file_and_only_errors_to_the_console(
    tmp_path: Path,
) -> None:
    props = parse_properties(log4j2_properties(tmp_path / "broker.log"))
    assert props["rootLogger.level"] == "info"
    assert props["appender.file.fileName"] == str(tmp_path / "broker.log")
    assert props["appender.console.filter.threshold.level"] == "error"
    assert {
        props["rootLogger.appenderRef.file.ref"],
        props["rootLogger.appenderRef.console.ref"],
    } == {props["appender.file.name"], props["appender.console.name"]}


def test_pom_asks_for_the_broker_and_a_matching_log4j_binding() -> None:
    pom = pom_xml()
    assert (f"<artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version>") in pom
    assert (f"<artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version>") in pom


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("bash: java: command not found", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert java_major_version(output) == major


def test_broker_paths_are_absolute_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = BrokerPaths.under(Path("var"))
    assert paths.root == tmp_path.resolve() / "var" / "kafka"
    assert paths.properties.parent == paths.root
    assert paths.log_dir.is_relative_to(paths.root)


def test_a_non_loopback_address_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = Settings(bootstrap_servers="10.1.2.3:9092", data_dir=tmp_path)
    assert run("start", settings) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "10.1.2.3:9092" in captured.err
    assert not (tmp_path / "kafka").exists()


def test_status_of_a_data_dir_without_a_broker(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:19192", data_dir=tmp_path)
    assert run("status", settings) == 3
    assert capsys.readouterr().out == "not running\n"
    assert run("stop", settings) == 0
    assert capsys.readouterr().out == "not running\n"


def test_an_impossible_broker_count_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:19192", data_dir=tmp_path)
    assert run("start", settings, 10) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "upsell-stream kafka: --brokers takes 1 to 9, not 10\n"
    assert not (tmp_path / "kafka").exists()
