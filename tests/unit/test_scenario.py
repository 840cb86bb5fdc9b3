"""orchestrator.scenario: loading, step validation, and the expectations derived per checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.scenario import ALL, Expect, Scenario, Step, list_scenarios, load_scenario

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
N = 10_000  # the shipped scenarios' connections

NOTHING = {"server": {}, "client": {}}
ESTAB = {"server": {"ESTAB": N}, "client": {"ESTAB": N}}


def load(name: str) -> Scenario:
    return load_scenario(name, SCENARIOS)


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_scenario(str(path), SCENARIOS)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ")
    return msg[len(f"{path}: "):]


# --------------------------------------------------------------------------
# shipped scenarios
# --------------------------------------------------------------------------

def test_list_scenarios() -> None:
    names = [n for n, _ in list_scenarios(SCENARIOS)]
    assert names == ["backlog", "bulk", "c2s", "idle", "lossy", "orphan", "pressure", "s2c",
                     "slow-readers", "synrecv", "timewait"]


def test_idle() -> None:
    sc = load("idle")
    assert (sc.name, sc.connections, sc.bytes) == ("idle", N, 0)
    assert sc.checkpoints == ["baseline", "established"]
    assert sc.expectations() == {
        "baseline": Expect(NOTHING, {}),
        "established": Expect(ESTAB, {"server>client": 0, "client>server": 0}),
    }


def test_timewait() -> None:
    exp = load("timewait").expectations()
    assert list(exp) == ["baseline", "established", "fin_wait2", "time_wait"]
    assert exp["established"].states == ESTAB
    # the client closed first: it waits in FIN-WAIT-2, the server sits in CLOSE-WAIT
    assert exp["fin_wait2"] == Expect({"client": {"FIN-WAIT-2": N}, "server": {"CLOSE-WAIT": N}},
                                      {})
    # both closed: the first closer holds TIME-WAIT, the server has no socket left
    assert exp["time_wait"] == Expect({"client": {"TIME-WAIT": N}, "server": {}}, {})


def test_c2s() -> None:
    sc = load("c2s")
    assert sc.bytes == 13
    exp = sc.expectations()
    assert exp["established"].queued == {"server>client": 0, "client>server": 0}
    assert exp["unread"] == Expect(ESTAB, {"server>client": 0, "client>server": 13})
    assert exp["read"] == Expect(ESTAB, {"server>client": 0, "client>server": 0})


def test_s2c() -> None:
    exp = load("s2c").expectations()
    assert exp["unread"].queued == {"server>client": 13, "client>server": 0}
    assert exp["read"].queued == {"server>client": 0, "client>server": 0}
    assert exp["unread"].states == ESTAB


def test_with_overrides() -> None:
    sc = load("c2s")
    small = sc.with_overrides(2000, 100)
    assert (small.connections, small.bytes) == (2000, 100)
    assert small.steps == sc.steps and small.name == "c2s"
    exp = small.expectations()
    assert exp["unread"] == Expect({"server": {"ESTAB": 2000}, "client": {"ESTAB": 2000}},
                                   {"server>client": 0, "client>server": 100})
    assert sc.with_overrides(None, None) == sc
    assert sc.with_overrides(None, 0).expectations()["unread"].queued["client>server"] == 0
    assert sc.with_overrides(7, None).bytes == 13


def test_to_dict() -> None:
    assert load("timewait").to_dict()["steps"] == [
        {"checkpoint": "baseline"}, {"connect": {}}, {"checkpoint": "established"},
        {"close": {"side": "client"}}, {"checkpoint": "fin_wait2"},
        {"close": {"side": "server"}}, {"checkpoint": "time_wait"},
    ]


def test_unknown_scenario_lists_known_ones() -> None:
    with pytest.raises(InputError) as info:
        load("timewaits")
    assert str(info.value) == (f"unknown scenario 'timewaits': no {SCENARIOS / 'timewaits.yaml'}; "
                               "known scenarios: backlog, bulk, c2s, idle, lossy, orphan, pressure, "
                               "s2c, slow-readers, synrecv, timewait")


# --------------------------------------------------------------------------
# written scenarios: model and explicit expectations
# --------------------------------------------------------------------------

def test_sends_add_up_and_a_read_drains(tmp_path: Path) -> None:
    path = write(tmp_path, """\
connections: 50
bytes: 10
steps:
  - checkpoint: baseline
  - connect
  - send: client
  - send: {side: client, bytes: 5}
  - send: server
  - checkpoint: both
  - read: server
  - checkpoint: client_read
  - wait: 0.5
  - close: server
  - checkpoint: server_closed
""")
    sc = load_scenario(str(path), SCENARIOS)
    exp = sc.expectations()
    assert exp["both"].queued == {"client>server": 15, "server>client": 10}
    assert exp["client_read"].queued == {"client>server": 0, "server>client": 10}
    assert exp["server_closed"] == Expect({"server": {"FIN-WAIT-2": 50},
                                           "client": {"CLOSE-WAIT": 50}}, {})
    assert sc.steps[2] == Step("send", side="client")
    assert sc.steps[3] == Step("send", side="client", bytes=5)
    assert sc.steps[8] == Step("wait", seconds=0.5)


def test_explicit_expect_with_all(tmp_path: Path) -> None:
    path = write(tmp_path, """\
connections: 300
steps:
  - checkpoint: baseline
  - connect: {}
  - close: client
  - checkpoint:
      name: closing
      expect:
        client: {FIN-WAIT-2: all, TIME-WAIT: 0}
        server: {CLOSE-WAIT: 299, LAST-ACK: 1}
""")
    sc = load_scenario(str(path), SCENARIOS)
    assert sc.steps[-1].expect == {"client": {"FIN-WAIT-2": ALL, "TIME-WAIT": 0},
                                   "server": {"CLOSE-WAIT": 299, "LAST-ACK": 1}}
    exp = sc.expectations()["closing"]
    assert exp.states == {"client": {"FIN-WAIT-2": 300, "TIME-WAIT": 0},
                          "server": {"CLOSE-WAIT": 299, "LAST-ACK": 1}}
    assert exp.queued == {}
    # "all" follows -n
    assert sc.with_overrides(42, None).expectations()["closing"].states["client"] == {
        "FIN-WAIT-2": 42, "TIME-WAIT": 0}
    assert sc.to_dict()["steps"][-1] == {"checkpoint": "closing", "expect": sc.steps[-1].expect}


def test_explicit_expect_for_one_side_means_none_on_the_other(tmp_path: Path) -> None:
    path = write(tmp_path, """\
steps:
  - checkpoint: baseline
  - connect: {}
  - checkpoint: {name: up, expect: {server: {ESTAB: all}}}
""")
    sc = load_scenario(str(path), SCENARIOS)
    assert sc.connections == 10_000 and sc.bytes == 0  # defaults
    assert sc.expectations()["up"].states == {"server": {"ESTAB": 10_000}, "client": {}}


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

BASE = "steps:\n  - checkpoint: baseline\n  - connect: {}\n"


@pytest.mark.parametrize(("text", "want"), [
    (BASE + "  - shutdown: client\n",
     'steps[2]: expected one of connect, accept, send, read, join, close, abort, wait, block_acks, checkpoint, got "shutdown"'),
    ("steps:\n  - checkpoint: baseline\n  - send: client\n  - connect: {}\n",
     "steps[1]: expected send after a connect step"),
    ("steps:\n  - checkpoint: baseline\n  - close: server\n",
     "steps[1]: expected close after a connect step"),
    (BASE + "  - checkpoint: up\n  - checkpoint: up\n",
     'steps: expected unique checkpoint names, got "up"'),
    (BASE + "  - checkpoint: baseline\n",
     'steps: expected unique checkpoint names, got "baseline"'),
    ("steps:\n  - connect: {}\n  - checkpoint: baseline\n",
     "steps: expected a first step `checkpoint: baseline`"),
    ("steps:\n  - checkpoint: start\n  - connect: {}\n",
     "steps: expected a first step `checkpoint: baseline`"),
    ("steps:\n  - connect: {}\n",
     "steps: expected a first step `checkpoint: baseline`"),
    (BASE + "  - connect: {}\n", "steps[2]: expected a single connect step"),
    (BASE + "  - close: client\n  - send: client\n",
     "steps[3]: expected no send by the client after it closed"),
    (BASE + "  - close: client\n  - close: client\n",
     "steps[3]: expected no close by the client after it closed"),
    (BASE + "  - send: both\n", 'steps[2].send.side: expected server or client, got "both"'),
    (BASE + "  - send: {side: client, bytes: 0}\n",
     "steps[2].send.bytes: expected an integer >= 1, got 0"),
    (BASE + "  - read: {side: client, bytes: 5}\n",
     "steps[2].read.bytes: unknown key; expected one of side, rate, background"),
    (BASE + "  - wait: -1\n", "steps[2].wait: expected a number of seconds >= 0, got -1"),
    (BASE + "  - wait: soon\n", 'steps[2].wait: expected a number of seconds >= 0, got "soon"'),
    (BASE + "  - wait: .nan\n", "steps[2].wait: expected a number of seconds >= 0, got nan"),
    (BASE + "  - wait: .inf\n", "steps[2].wait: expected a number of seconds >= 0, got inf"),
    (BASE + "  - wait: true\n", "steps[2].wait: expected a number of seconds >= 0, got True"),
    ("steps:\n  - checkpoint: baseline\n  - connect: {port: 80}\n",
     "steps[1].connect.port: unknown key; expected one of accept"),
    ("steps:\n  - checkpoint: baseline\n  - connect: {accept: maybe}\n",
     'steps[1].connect.accept: expected true or false, got "maybe"'),
    (BASE + "  - block_acks: client\n", "steps[2]: expected block_acks before the connect step"),
    (BASE + "  - checkpoint: two words\n",
     'steps[2].checkpoint.name: expected letters, digits and _, got "two words"'),
    (BASE + "  - {checkpoint: a, connect: {}}\n",
     ("steps[2]: expected a mapping with one of connect, accept, send, read, join, close, abort, wait, block_acks, checkpoint, "
     "got {'checkpoint': 'a', 'connect': {}}")),
    (BASE + "  - checkpoint: {name: up, expect: {client: {ESTAB: some}}}\n",
     'steps[2].checkpoint.expect.client.ESTAB: expected a count >= 0 or "all", got "some"'),
    (BASE + "  - checkpoint: {name: up, expect: {peer: {}}}\n",
     "steps[2].checkpoint.expect.peer: unknown key; expected one of server, client"),
    ("connections: ten\n" + BASE, 'connections: expected an integer >= 1, got "ten"'),
    ("connections: 0\n" + BASE, "connections: expected an integer >= 1, got 0"),
    ("bytes: -13\n" + BASE, "bytes: expected an integer >= 0, got -13"),
    ("conections: 5\n" + BASE,
     "conections: unknown key; expected one of description, connections, bytes, steps"),
    ("description: x\n", "steps: missing; this key is required"),
    ("steps: []\n", "steps: expected a first step `checkpoint: baseline`"),
])
def test_invalid_scenarios(tmp_path: Path, text: str, want: str) -> None:
    assert error(tmp_path, text) == want


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "steps:\n  - checkpoint: baseline\n  - connect: {\n")
    with pytest.raises(InputError) as info:
        load_scenario(str(path), SCENARIOS)
    assert str(info.value).startswith(f"{path}:4: malformed YAML (")


# --------------------------------------------------------------------------
# resets: a close with unread data, and abort
# --------------------------------------------------------------------------

#: shared with tests/integration/test_netns_resets.py, which runs it
UNREAD_CLOSE = (Path(__file__).resolve().parents[1] / "data" / "scenarios"
                / "unread-close.yaml").read_text()


def test_a_close_with_unread_data_resets(tmp_path: Path) -> None:
    """The client never read the server's 100 KB: its close sends a reset, not a FIN. Its
    sockets go away; the server's are CLOSE (ss: UNCONN) or gone, with nothing queued."""
    exp = load_scenario(str(write(tmp_path, UNREAD_CLOSE)), SCENARIOS).expectations()
    assert exp["reset"] == Expect({"client": {}, "server": {"UNCONN": (0, 1000)}}, {})
    assert exp["reset"].cause == (
        "steps[4] `close: client` with 102,400 unread bytes per connection "
        "(a close with unread data sends a reset, not a FIN)")
    assert exp["gone"] == Expect({"client": {}, "server": {}}, {})
    assert exp["gone"].cause == "steps[6] `close: server` (a FIN)"


def test_a_close_after_reading_everything_is_a_fin(tmp_path: Path) -> None:
    text = UNREAD_CLOSE.replace("  - close: client\n", "  - read: client\n  - close: client\n")
    exp = load_scenario(str(write(tmp_path, text)), SCENARIOS).expectations()
    assert exp["reset"] == Expect({"client": {"FIN-WAIT-2": 1000},
                                   "server": {"CLOSE-WAIT": 1000}}, {})
    assert exp["gone"] == Expect({"client": {"TIME-WAIT": 1000}, "server": {}}, {})


def test_abort_resets_without_unread_data() -> None:
    # shared with tests/integration/test_netns_resets.py, which runs it
    path = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "abort.yaml"
    sc = load_scenario(str(path), SCENARIOS)
    assert sc.steps[3] == Step("abort", side="client")
    assert sc.to_dict()["steps"][3] == {"abort": {"side": "client"}}
    exp = sc.expectations()
    assert exp["established"].cause == "steps[1] `connect`"
    assert exp["aborted"] == Expect({"client": {}, "server": {"UNCONN": (0, 1000)}}, {})
    assert exp["aborted"].cause == "steps[3] `abort: client` (SO_LINGER 0: a reset)"


def test_the_second_close_resets_when_it_leaves_data_unread(tmp_path: Path) -> None:
    """The client sent 13 bytes the server never read; the client closes (FIN), then the
    server's close resets: the client's FIN-WAIT-2 goes too, nothing is left."""
    path = write(tmp_path, """\
connections: 10
bytes: 13
steps:
  - checkpoint: baseline
  - connect: {}
  - send: client
  - close: client
  - checkpoint: half
  - close: server
  - checkpoint: done
""")
    exp = load_scenario(str(path), SCENARIOS).expectations()
    assert exp["half"] == Expect({"client": {"FIN-WAIT-2": 10}, "server": {"CLOSE-WAIT": 10}}, {})
    assert exp["done"] == Expect({"client": {}, "server": {}}, {})
    assert "13 unread bytes" in exp["done"].cause


def test_no_step_by_a_side_after_it_aborted(tmp_path: Path) -> None:
    assert error(tmp_path, """\
steps:
  - checkpoint: baseline
  - connect: {}
  - abort: client
  - send: client
""") == "steps[3]: expected no send by the client after it closed"
