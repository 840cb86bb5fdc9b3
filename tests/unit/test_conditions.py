"""Link conditions: the value, its two input forms with their exact messages, the queue
sizing, placement, and the commands each engine runs (pure; no host touched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.conditions import fallback, netem
from orchestrator.conditions.link import Link
from orchestrator.conditions.parse import parse_map, parse_text
from orchestrator.conditions.placement import attachments
from orchestrator.config import load_lab
from orchestrator.errors import InputError
from orchestrator.topology import derive
from orchestrator.yamlfile import Doc

REPO = Path(__file__).resolve().parents[2]


def test_text_form_parses_every_key() -> None:
    link = parse_text("delay=25ms jitter=2ms loss=0.5% rate=200mbit queue=2000")
    assert link == Link(25_000, 2_000, 0.5, 200_000_000, 2000)
    assert link.describe() == ("delay 25 ms each way (RTT 50 ms), jitter 2 ms, rate 200 "
                               "Mbit/s, loss 0.5%, queue 2,000 packets")


def test_commas_units_and_none() -> None:
    assert parse_text("delay=1.5ms,rate=1gbit") == Link(delay_us=1500, rate_bps=10**9)
    assert parse_text("delay=250us loss=1") == Link(delay_us=250, loss_pct=1.0)
    assert parse_text("delay=2s") == Link(delay_us=2_000_000)
    assert parse_text("none") == Link()
    assert Link().empty and Link().describe() == "no conditions (a perfect link)"


def test_queue_defaults_to_one_bdp_and_says_so() -> None:
    link = parse_text("delay=25ms rate=40mbit").sized()
    assert link.bdp_bytes() == 250_000  # 40 Mbit/s x 50 ms
    assert link.queue == 167 and link.queue_sized  # 250,000 / 1,500 rounded up
    assert link.describe().endswith("queue 167 packets (one bandwidth-delay product)")
    # the emulator's limit adds the packets on the wire during the one-way delay and a
    # little headroom, so that the queue at the bottleneck is the one asked for
    assert link.hold_limit() == 167 + 84 + 16
    big = parse_text("delay=50ms rate=1gbit").sized()
    assert big.queue == 8334 and big.hold_limit() > 1000
    assert parse_text("delay=25ms rate=40mbit queue=50").sized().queue == 50
    assert parse_text("delay=25ms").sized().hold_limit() == 100_000  # no rate: no bottleneck


def test_round_trips() -> None:
    link = parse_text("delay=25ms jitter=1ms loss=0.25% rate=40mbit").sized()
    assert Link.from_dict(link.to_dict()) == link
    # the lab-file form of what was asked reads back as the same link (the queue is sized
    # again, not frozen)
    doc = Doc(Path("lab.yaml"), link.to_lab(), ("network", "link"))
    assert parse_map(doc).sized() == link


TEXT_ERRORS = [
    ("", '--link/LINK: expected KEY=VALUE pairs like "delay=25ms loss=0.5% rate=200mbit '
         'queue=2000", or none, got ""'),
    ("25ms", '--link/LINK: expected KEY=VALUE pairs like "delay=25ms loss=0.5% rate=200mbit '
             'queue=2000", got "25ms"'),
    ("dealy=25ms", "--link/LINK: dealy: unknown key; expected one of delay, jitter, loss, "
                   "rate, queue"),
    ("delay=25ms delay=5ms", "--link/LINK: delay is given twice; keep one"),
    ("delay=25", '--link/LINK: delay: expected a one-way delay like 25ms (us, ms or s) up to '
                 '10s, got "25"'),
    ("delay=11s", '--link/LINK: delay: expected a one-way delay like 25ms (us, ms or s) up to '
                  '10s, got "11s"'),
    ("delay=5ms jitter=10ms", "--link/LINK: jitter: expected a jitter no larger than the delay "
                              "(5ms; netem would clip the negative delays, skewing the "
                              'distribution), got "10ms"'),
    ("loss=100%", '--link/LINK: loss: expected a loss percentage like 0.5% (0 to below 100), '
                  'got "100%"'),
    ("loss=lots", '--link/LINK: loss: expected a loss percentage like 0.5% (0 to below 100), '
                  'got "lots"'),
    ("rate=200", '--link/LINK: rate: expected a rate in bits per second like 200mbit (bit, '
                 'kbit, mbit, gbit) from 8kbit to 100gbit, got "200"'),
    ("rate=200mbps", "--link/LINK: rate: expected bits per second (tc's kbps, mbps and gbps "
                     'are bytes per second): write kbit, mbit or gbit, like 200mbit, got '
                     '"200mbps"'),
    ("rate=1kbit", '--link/LINK: rate: expected a rate in bits per second like 200mbit (bit, '
                   'kbit, mbit, gbit) from 8kbit to 100gbit, got "1kbit"'),
    ("queue=0", '--link/LINK: queue: expected a number of packets from 1 to 1000000, got "0"'),
]


@pytest.mark.parametrize(("text", "message"), TEXT_ERRORS, ids=[t or "empty" for t, _ in TEXT_ERRORS])
def test_text_errors_are_exact(text: str, message: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_text(text)
    assert str(exc.value) == message


def _lab(tmp_path: Path, link_yaml: str) -> Path:
    text = (REPO / "lab" / "default.yaml").read_text()
    text = text.replace("  subnet: 198.18.0.0/24", "  subnet: 198.18.0.0/24\n" + link_yaml, 1)
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_lab_file_link(tmp_path: Path) -> None:
    lab = load_lab(_lab(tmp_path, "  link: {delay: 25ms, loss: 0.5, rate: 200mbit, queue: 2000}"))
    assert lab.link == Link(25_000, 0, 0.5, 200_000_000, 2000)
    assert lab.to_dict()["network"]["link"] == {"delay": "25000us", "loss": "0.5%",
                                                "rate": "200000000bit", "queue": 2000}
    assert load_lab(REPO / "lab" / "default.yaml").link is None


LAB_ERRORS = [
    ("  link: {delay: 25}", "network.link.delay: expected a one-way delay like 25ms (us, ms or "
                            "s) up to 10s, got 25"),
    ("  link: {latency: 25ms}", "network.link.latency: unknown key; expected one of delay, "
                                "jitter, loss, rate, queue"),
    ("  link: {queue: many}", 'network.link.queue: expected a number of packets from 1 to '
                              '1000000, got "many"'),
    ("  link: 25ms", 'network.link: expected a mapping, got "25ms"'),
]


@pytest.mark.parametrize(("yaml_text", "message"), LAB_ERRORS,
                         ids=["delay-number", "unknown-key", "queue-text", "not-a-map"])
def test_lab_file_errors_are_exact(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = _lab(tmp_path, yaml_text)
    with pytest.raises(InputError) as exc:
        load_lab(path)
    assert str(exc.value) == f"{path}: {message}"


def test_placement_never_on_a_senders_egress() -> None:
    lab = load_lab(REPO / "lab" / "default.yaml")
    ends = attachments(lab)
    assert [(a.host, a.hook, a.direction) for a in ends] == [
        ("server", "ingress", "client -> server"), ("client", "ingress", "server -> client")]
    routed = attachments(derive(lab, 2, "plain"))
    assert [(a.host, a.hook, a.direction, a.address) for a in routed] == [
        ("router", "forward", "client -> server", "198.18.1.1"),
        ("router", "forward", "server -> client", "198.18.0.1")]
    assert len({a.queue_num for a in routed}) == 2  # one NFQUEUE per direction


def test_netem_commands() -> None:
    link = parse_text("delay=25ms jitter=1ms loss=1% rate=40mbit").sized()
    assert netem.netem_args(link) == ["netem", "limit", "267", "delay", "25000us", "1000us",
                                      "loss", "1%", "rate", "40000000bit"]
    assert netem.forward_argvs("eth1", link)[0][:6] == ["tc", "qdisc", "replace", "dev",
                                                         "eth1", "root"]
    ingress = netem.ingress_argvs("eth0", link)
    assert ingress[0] == ["python3", "-c", netem.GRO_OFF, "eth0"]  # netem counts wire packets
    assert ingress[1] == ["ip", "link", "add", "tlifb0", "type", "ifb"]
    assert "mirred" in ingress[4] and ingress[5][:6] == ["tc", "qdisc", "add", "dev", "tlifb0",
                                                         "root"]


def test_netem_stats_parsed_from_tc_json() -> None:
    text = ('[{"kind":"netem","handle":"8001:","root":true,"options":{"limit":399},'
            '"bytes":1234,"packets":10,"drops":3,"overlimits":0,"requeues":0,'
            '"backlog":3000,"qlen":2}]')
    assert netem.parse_stats(text) == {"held_packets": 2, "held_bytes": 3000, "dropped": 3,
                                       "sent_packets": 10, "sent_bytes": 1234}
    assert netem.parse_stats('[{"kind":"pfifo"}]') == {}


def test_fallback_commands_and_stats(tmp_path: Path) -> None:
    lab = load_lab(REPO / "lab" / "default.yaml")
    server_in = attachments(lab)[0]
    link = parse_text("delay=25ms loss=1% rate=40mbit").sized()
    argv = fallback.delayline_argv(Path("/x/delayline.py"), server_in, link, tmp_path, 1000)
    assert argv[:4] == ["python3", "/x/delayline.py", "--queue-num", "1"]
    assert argv[argv.index("--loss") + 1] == "0.01"  # a probability for the delay line
    assert argv[argv.index("--limit") + 1] == str(link.hold_limit())
    assert fallback.rule_argvs(server_in, "eth0", "ipv4") == [
        ["iptables", "-w", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-j", "NFQUEUE",
         "--queue-num", "1"]]
    routed = attachments(derive(lab, 1, "nat"))[1]
    assert fallback.rule_argvs(routed, "eth0", "ipv6")[1][:8] == [
        "ip6tables", "-w", "-t", "mangle", "-A", "FORWARD", "-o", "eth0"]
    stats = {"held_now": 12, "held_bytes_now": 18000, "dropped_by_limit": 2, "lost": 5,
             "dropped_undelivered": 0, "released": 900, "max_held": 40}
    assert fallback.normalize(stats) == {"held_packets": 12, "held_bytes": 18000, "dropped": 7,
                                         "sent_packets": 900, "dropped_by_limit": 2, "lost": 5,
                                         "max_held": 40}


# -- the netem engine through a session (this machine has no netem: a recording runner
# stands in for the hosts' tc; the real thing runs on the vm backend) ------------------------

class _Recorder:
    """A lab host's runner: answers ``ip -o addr show to ADDR`` with an interface named
    ``eth1`` (as in a VM), records every command, fails the ones given."""

    def __init__(self, host: str, fail: str = "") -> None:
        self.host, self.fail, self.commands = host, fail, []

    def run(self, cmd, *, check=True, timeout=60, stdin=None):
        from orchestrator.runner import Result

        argv = [str(c) for c in cmd]
        self.commands.append(argv)
        out, code = "", 0
        if argv[:5] == ["ip", "-o", "addr", "show", "to"]:
            out = f"3: eth1    inet {argv[5]}/24 scope global eth1\n"
        elif argv[:2] == ["uname", "-r"]:
            out = "6.1.0-57-cloud-amd64\n"
        elif argv[:3] == ["tc", "-s", "-j"]:
            out = '[{"kind":"netem","qlen":5,"backlog":7570,"drops":1,"packets":9,"bytes":99}]'
        elif self.fail and self.fail in argv:
            code = 2
        result = Result(" ".join(argv), self.host, code, out, "Error: Specified qdisc kind is "
                        "unknown." if code else "")
        return result.check() if check else result


class _Backend:
    def __init__(self, tmp: Path) -> None:
        from orchestrator.journal import Journal

        self.journal = Journal("t", tmp)

    def link_runner(self, host):
        return host.runner


def _session(tmp_path: Path, lab, fail: str = "", *, engine: str = "netem",
             make_runner=None, backend_cls=None):
    """A LinkSession over recording runners (``make_runner(host)``, else _Recorder)."""
    from orchestrator.backends.base import LabHost
    from orchestrator.conditions.session import LinkSession, asked_record

    link = parse_text("delay=25ms rate=40mbit")
    make_runner = make_runner or (lambda name: _Recorder(name, fail))
    hosts = {h.name: LabHost(h, make_runner(h.name)) for h in lab.hosts}
    record = asked_record(link, link.sized(), engine, "test")
    return LinkSession(link.sized(), engine, lab, (backend_cls or _Backend)(tmp_path), hosts,
                       "ipv4", lambda _m: None, record), hosts, record


def test_netem_session_on_each_ends_ingress(tmp_path: Path) -> None:
    session, hosts, record = _session(tmp_path, load_lab(REPO / "lab" / "default.yaml"))
    session.apply()
    for name in ("server", "client"):
        cmds = hosts[name].runner.commands
        assert cmds[1] == ["python3", "-c", netem.GRO_OFF, "eth1"]
        assert cmds[2] == ["ip", "link", "add", "tlifb0", "type", "ifb"]
        assert cmds[-1][:6] == ["tc", "qdisc", "add", "dev", "tlifb0", "root"]
        assert "limit" in cmds[-1] and cmds[-1][cmds[-1].index("limit") + 1] == "267"
    assert [(a["host"], a["dev"], a["direction"]) for a in record["applied"]] == [
        ("server", "eth1", "client -> server"), ("client", "eth1", "server -> client")]
    stats = session.stats()
    assert stats["server ingress"]["held_packets"] == 5
    assert hosts["server"].runner.commands[-1] == ["tc", "-s", "-j", "qdisc", "show", "dev",
                                                   "tlifb0"]


def test_netem_session_on_the_routers_forwarding_path(tmp_path: Path) -> None:
    lab = derive(load_lab(REPO / "lab" / "default.yaml"), 2, "plain")
    session, hosts, record = _session(tmp_path, lab)
    session.apply()
    tc = [c for c in hosts["router"].runner.commands if c[0] == "tc"]
    assert [c[:7] for c in tc] == [["tc", "qdisc", "replace", "dev", "eth1", "root", "netem"]] * 2
    assert all(not hosts[c].runner.commands for c in ("server", "client1", "client2"))
    assert sorted(session.stats()) == ["router forward client -> server",
                                       "router forward server -> client"]


def test_a_kernel_without_netem_fails_the_run_naming_what_it_needs(tmp_path: Path) -> None:
    from orchestrator.errors import RunError

    session, _hosts, _record = _session(tmp_path, load_lab(REPO / "lab" / "default.yaml"),
                                        fail="netem")
    with pytest.raises(RunError) as exc:
        session.apply()
    message = str(exc.value)
    assert message.startswith("server: `tc qdisc add dev tlifb0 root netem limit 267 delay "
                              "25000us rate 40000000bit` failed (Error: Specified qdisc kind is "
                              "unknown.); the host's kernel (6.1.0-57-cloud-amd64) needs "
                              "sch_netem, ifb, act_mirred and cls_u32 for link conditions")


def test_the_fallback_needs_iptables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.conditions.engines import choose

    link = parse_text("delay=25ms")
    assert choose("fallback", link, "netns") == ("fallback", "forced (--link-engine fallback)")
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without iptables
    with pytest.raises(InputError) as exc:
        choose("fallback", link, "docker")
    assert str(exc.value) == ("--link/LINK: the delay line (the fallback engine: forced "
                              "(--link-engine fallback)) needs iptables on this machine, for "
                              "its NFQUEUE rules in the lab's namespaces: apt-get install "
                              "iptables")


def test_compare_tells_links_apart_and_reports_show_them() -> None:
    """Two copies of one stored run, one with link conditions recorded: two setups, the
    link a line of the metadata that differs; the text report's header names it and its
    per-checkpoint counters."""
    import json

    from orchestrator.conditions.session import asked_record
    from orchestrator.report import compare, text
    from orchestrator.results import Result

    data = json.loads((REPO / "tests/data/results/20261126-012656-s2c-default/result.json")
                      .read_text())
    plain = Result.from_dict(data)
    asked = parse_text("delay=25ms rate=40mbit")
    record = asked_record(asked, asked.sized(), "fallback", "no sch_netem")
    record["where"] = "on each end's ingress"
    linked_data = json.loads(json.dumps(data))
    linked_data["metadata"]["link"] = record
    for cp in linked_data["checkpoints"]:
        cp["link"] = {"client ingress": {"held_packets": 12, "held_bytes": 18000, "dropped": 3}}
    linked = Result.from_dict(linked_data)
    cmp = compare.compare([plain, plain, linked])
    assert [g["n"] for g in cmp["groups"]] == [2, 1]
    row = next(r for r in cmp["metadata"] if r["field"] == "link")
    assert row["differs"] and row["values"][0] == "none"
    assert row["values"][1].startswith("delay 25 ms each way (RTT 50 ms), rate 40 Mbit/s")
    assert not any(r["field"] == "link" for r in compare.compare([plain, plain])["metadata"])
    report = text.render(linked)
    assert "link: delay 25 ms each way (RTT 50 ms), rate 40 Mbit/s, queue 167 packets" in report
    assert "engine fallback (the delay line): no sch_netem; limit 267 packets" in report
    assert "unread        client ingress              12        18,000                 3" in report
