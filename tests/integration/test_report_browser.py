"""The HTML report in a real browser: Debian's headless Chromium loads report.html from
file://, draws the charts, and makes no network request.

Proof of "no request", twice over: Chromium runs in a fresh network namespace with only
a loopback interface (``unshare --net``), and its net log (``--log-net-log``) must hold
no http(s)/ws request started by the page. Chromium's own background fetches (component
updater: no initiator, no page) are told apart by their initiator; a control page with
an external stylesheet and image checks that a page's request does show up in the log.

Skipped when chromium is missing, except under CI (env CI set), where it fails instead.
Set TCPLAB_SCREENSHOT=docs/report-screenshot.png to keep the screenshot.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from orchestrator.report import html as report_html

pytestmark = pytest.mark.slow

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
RUN = "20261126-012650-c2s-default"
WIDTH = 1200
HEIGHT = 4600
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-features=NetworkTimeServiceQuerying", "--disable-extensions",
         "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
         "--disable-breakpad", "--hide-scrollbars", "--force-device-scale-factor=1"]
NETWORK_SCHEMES = ("http://", "https://", "ws://", "wss://", "ftp://")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "chromium is not installed (apt-get install -y chromium)"
    if in_ci():
        pytest.fail(message + "; CI must install it")
    pytest.skip(message)


@pytest.fixture(scope="module")
def isolate() -> list[str]:
    """A prefix that runs a command in a new network namespace holding only loopback."""
    candidates = [["unshare", "--net", "--"],
                  ["unshare", "--user", "--map-root-user", "--net", "--"]]
    for prefix in candidates:
        try:
            probe = subprocess.run([*prefix, "cat", "/proc/net/dev"], check=False,
                                   capture_output=True,
                                   text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            interfaces = [ln.split(":")[0].strip() for ln in probe.stdout.splitlines()[2:]]
            assert interfaces == ["lo"], interfaces
            return prefix
    message = "cannot create a network namespace (unshare --net needs root or user namespaces)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("results") / RUN
    run.mkdir()
    shutil.copy(RESULTS / RUN / "result.json", run / "result.json")
    return report_html.write_report(run, probe_defaults=False)


def run_chromium(chromium: str, isolate: list[str], url: str, work: Path, action: list[str],
                 ) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run one headless Chromium in its own session; return the result and its URL requests."""
    work.mkdir(parents=True, exist_ok=True)
    netlog = work / "netlog.json"
    cmd = [*isolate, chromium, *FLAGS, f"--user-data-dir={work / 'profile'}",
           f"--log-net-log={netlog}", "--net-log-capture-mode=Everything",
           f"--window-size={WIDTH},{HEIGHT}", *action, url]
    env = dict(os.environ, HOME=str(work))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        out, err = "", "timed out"
    finally:
        try:  # Chromium's helpers share the session we started: end them by its group id
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    assert netlog.is_file(), f"no net log; chromium said: {err[-800:]}"
    return done, url_requests(netlog)


def url_requests(netlog: Path) -> list[dict]:
    """Every URL request Chromium started: {url, initiator, isolation}."""
    text = netlog.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # a log cut short: close the event list
        data = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {v: k for k, v in data["constants"]["logEventTypes"].items()}
    out = []
    for event in data.get("events", []):
        p = event.get("params", {})
        if names.get(event["type"]) == "URL_REQUEST_START_JOB" and "url" in p:
            out.append({"url": p.get("url", ""), "initiator": p.get("initiator", ""),
                        "isolation": p.get("network_isolation_key", "")})
    return out


def page_requests(requests: list[dict]) -> list[dict]:
    """Requests a document started (the browser's own fetches have no initiating origin)."""
    return [r for r in requests if r["initiator"] != "not an origin"
            or r["isolation"] not in ("", "null null")]


def test_control_page_request_is_caught(chromium, isolate, tmp_path):
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><link rel="stylesheet" href="https://198.18.0.9/x.css">'
                    '<p>control</p><img src="http://198.18.0.9/x.png">')
    done, requests = run_chromium(chromium, isolate, page.as_uri(), tmp_path / "c", ["--dump-dom"])
    assert "control" in done.stdout
    urls = {r["url"] for r in page_requests(requests)}
    assert {"https://198.18.0.9/x.css", "http://198.18.0.9/x.png"} <= urls


def test_report_loads_with_charts_and_no_request(chromium, isolate, report, tmp_path):
    done, requests = run_chromium(chromium, isolate, report.as_uri(), tmp_path / "dom",
                                  ["--dump-dom"])
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-800:]
    assert dom.count("<svg") == 3, "the three charts are in the DOM"
    for text in ("Findings of the source article", "buffers are released promptly",
                 "845 B &lt; tcp_rmem[0] 4,096 B", "7,440", "Timeline", "TCP states per host"):
        assert text in dom, text
    requested = [r["url"] for r in page_requests(requests)]
    assert [u for u in requested if u.startswith(NETWORK_SCHEMES)] == []
    assert [u for u in requested if not u.startswith(("file:", "data:", "about:"))] == []


def test_report_screenshot(chromium, isolate, report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    done, requests = run_chromium(chromium, isolate, report.as_uri(), tmp_path / "shot",
                                  [f"--screenshot={shot}"])
    assert shot.is_file(), done.stderr[-800:]
    assert [r["url"] for r in page_requests(requests) if r["url"].startswith(NETWORK_SCHEMES)] == []
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    # drop the empty page background below the report
    background = image.getpixel((2, HEIGHT - 2))
    rows = [y for y in range(0, HEIGHT, 8)
            if any(image.getpixel((x, y)) != background for x in range(0, WIDTH, 6))]
    bottom = min(HEIGHT, rows[-1] + 40)
    image = image.crop((0, 0, WIDTH, bottom))
    assert bottom > 2500, "the whole report was drawn"
    colours = image.resize((300, bottom // 4)).getcolors(maxcolors=100_000)
    assert colours is not None and len(colours) > 50, "charts and text, not a blank page"
    keep = os.environ.get("TCPLAB_SCREENSHOT")
    if keep:
        # 256 colours look the same here (flat UI colours, no photo) at a third of the size
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                       dither=Image.Dither.NONE).save(keep, optimize=True)


def test_sweep_report_loads_with_charts_and_no_request(chromium, isolate, tmp_path):
    """The sweep page (report/sweep_charts.py): its two charts drawn, its tables, no request."""
    from orchestrator import sweep
    from orchestrator.report import sweep as sweep_report
    from orchestrator.report.sweep_charts import render_html
    from orchestrator.results import load_result

    runs = ["20261126-012656-s2c-default", "20261126-012700-s2c-small-buffers"]
    sw = sweep.Sweep("sysctl", "net.ipv4.tcp_rmem", ("4096 131072 33554432", "4096 16384 65536"),
                     ("32M", "64k"))
    doc = sweep_report.summarize(sw.to_dict(), [load_result(RESULTS / r) for r in runs], [0, 1])
    page = tmp_path / "sweep.html"
    page.write_text(render_html(doc, {r: f"{r}/report.html" for r in runs}))
    done, requests = run_chromium(chromium, isolate, page.as_uri(), tmp_path / "dom",
                                  ["--dump-dom"])
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-800:]
    assert dom.count("<svg") == 2, "memory and buffer charts are in the DOM"
    for text in ("Sweep of net.ipv4.tcp_rmem", "Memory per connection against net.ipv4.tcp_rmem",
                 "at unread", "client rmem_alloc B/socket", "Goodput was not recorded"):
        assert text in dom, text
    requested = [r["url"] for r in page_requests(requests)]
    assert [u for u in requested if not u.startswith(("file:", "data:", "about:"))] == []


def test_link_sweep_page_draws_goodput_and_names_each_points_link(chromium, isolate, tmp_path):
    """A link sweep (``--sweep "delay=0ms,50ms"``, slow-readers): memory, buffers and
    goodput charts, the link of each point, no request."""
    from orchestrator import sweep
    from orchestrator.report import sweep as sweep_report
    from orchestrator.report.sweep_charts import render_html
    from orchestrator.results.model import Result

    runs = ["sweep-delay-0ms-20261201-060753", "sweep-delay-50ms-20261201-060918"]
    data = RESULTS.parent / "conditions"  # tests/data/conditions/README.md
    results = [Result.from_dict(json.loads(gzip.decompress(
        (data / f"{r}.result.json.gz").read_bytes()))) for r in runs]
    doc = sweep_report.summarize(sweep.parse("delay=0ms,50ms").to_dict(), results, [0, 1])
    page = tmp_path / "sweep.html"
    page.write_text(render_html(doc, {r.run_id: f"{r.run_id}/report.html" for r in results}))
    done, requests = run_chromium(chromium, isolate, page.as_uri(), tmp_path / "dom",
                                  ["--dump-dom"])
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-800:]
    assert dom.count("<svg") == 3, "memory, buffer and goodput charts are in the DOM"
    for text in ("Sweep of delay", "Memory per connection against delay", "Goodput against delay",
                 "link at each point:", "delay=50ms: delay 50 ms each way (RTT 100 ms)",
                 "goodput MB/s (all connections)", "8.38"):
        assert text in dom, text
    assert "Goodput was not recorded" not in dom
    requested = [r["url"] for r in page_requests(requests)]
    assert [u for u in requested if not u.startswith(("file:", "data:", "about:"))] == []


SWEEP = ("20261126-045425-c2s-default", "20261126-045545-c2s-default")  # 6.1 VMs, host 6.18


@pytest.fixture(scope="module")
def sweep_page(tmp_path_factory) -> Path:
    """The kernel sweep's HTML (``KERNELS="6.1 host"``), written as ``tcplab run`` does."""
    from orchestrator.report import kernels as kernels_compare
    from orchestrator.results import load_result

    out = tmp_path_factory.mktemp("sweep")
    runs = []
    for name in SWEEP:
        (out / name).mkdir()
        shutil.copy(RESULTS / name / "result.json", out / name / "result.json")
        runs.append(out / name)
    _, md = kernels_compare.report([load_result(d) for d in runs], runs, out)
    return md.with_suffix(".html")


def test_kernel_sweep_page_draws_its_trend_charts_and_no_request(chromium, isolate, sweep_page,
                                                                 tmp_path):
    done, requests = run_chromium(chromium, isolate, sweep_page.as_uri(), tmp_path / "dom",
                                  ["--dump-dom"])
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-800:]
    assert dom.count("<svg") == 4, "trend, per side, object sizes, release time"
    for chart in ("Bytes per connection by cache across kernels", "Each side's own kernel",
                  "Object sizes of the socket caches per kernel", "Buffer release time per kernel"):
        assert chart in dom, chart
    for text in ("3.10 (published)", "published, not measured here", "6.18.44-fc-v782",
                 "7,633", "1,280 → 0", "buffers are released promptly",
                 "newer kernels recycle buffers faster"):
        assert text in dom, text
    head = dom.index("<th>checkpoint</th>")  # the trend table's header: kernels by version
    assert head < dom.index('<th class="num">6.1<br>', head) < dom.index('<th class="num">host<br>', head)
    requested = [r["url"] for r in page_requests(requests)]
    assert [u for u in requested if not u.startswith(("file:", "data:", "about:"))] == []

    shot = tmp_path / "sweep.png"
    run_chromium(chromium, isolate, sweep_page.as_uri(), tmp_path / "shot",
                 [f"--screenshot={shot}"])
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colours = image.resize((300, HEIGHT // 4)).getcolors(maxcolors=100_000)
    assert colours is not None and len(colours) > 50, "charts and text, not a blank page"
