"""A lecture hall at once: many concurrent sessions on one Streamlit server (benchmarks/results/load.md).

Browser mode (phase 1 by default): one `streamlit run app.py` on loopback, one headless Chromium with --pages
contexts. (1) All pages open the same link at once; each is timed to a complete page (script state
notRunning, the metrics table and all 8 Plotly figures drawn); the server's stderr lines
`toydiff: sampled <sha1>` (printed by ui/compute.simulate on a real run, not on a cache hit) count
how often the sampler ran. (2) One fresh page on its own seed moves the η slider --single times by
keyboard: the single-user median. (3) --movers of the pages move to their own seed (so every move
is real work, not a cache hit of another page), then move sliders concurrently by keyboard for
--duration seconds (with --think seconds between moves): p50/p95 latency, errors, timeouts. Every
page's metrics table is then compared with toydiff.scene.run of the scenes its URL encodes. Server
RSS and the CPU seconds of the server vs the load generator (this process, Playwright's driver and
Chromium) are reported.

Memory mode (--memory-scenes, in a fresh subprocess): the app's cached functions (ui/compute.py:
simulate, metrics_of, field_at, background; the same st.cache_* bounds as in the server, no
runtime) are called directly for distinct scenes (the default pair, one seed per pair); RSS after
50 vs after all. A browser drives ≈ 1 page/s here, too slow for 500 scenes on 2 cores.

Protocol client (--client protocol, the default for (2)-(3); --open-client protocol for (1)):
ProtocolSession speaks the frontend's websocket protocol to the same server (rerun BackMsgs with
every widget's state, timed to script_finished, the deltas checked for the 8 figure components,
the metrics table and no exception), so the generator's CPU no longer competes with the server the
way 10 Chromium pages do. The browser, when it drove (1), is closed before (2).

Run: .venv/bin/python benchmarks/load.py [--pages 30 --movers 10 --duration 60 --memory-scenes 500]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port, start_app, wait_healthy  # noqa: E402

SAMPLED = re.compile(r"toydiff: sampled ([0-9a-f]+) net=(\S+)")
EXCEPTION = "[data-testid='stException']"
COMPLETE_JS = """(old) => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.dataset.testConnectionState !== 'CONNECTED' || app.dataset.testScriptState !== 'notRunning')
    return false;
  if (old !== null && location.search === old) return false;
  const table = [...document.querySelectorAll("[data-testid='stMarkdownContainer'] table")]
      .some(t => t.textContent.includes('off-support rate'));
  const charts = [...document.querySelectorAll('.js-plotly-plot')].filter(g => g.querySelector('.main-svg'));
  return table && charts.length >= 8;
}"""
TABLE_JS = """() => {
  const t = [...document.querySelectorAll("[data-testid='stMarkdownContainer'] table")]
      .find(t => t.textContent.includes('off-support rate'));
  return t ? [...t.querySelectorAll('tr')].map(r => [...r.children].map(c => c.textContent.trim())) : null;
}"""
# (label in the sidebar, which of the sliders with that label): each mover walks one, in one direction
SLIDERS = [
    ("sampler η", 0),
    ("weak-model blur δ", 0),
    ("γ (gamma)", 0),
    ("γ (gamma)", 1),
    ("τ (tau)", 0),
]


# ------------------------------------------------------------------------------------------ server


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (psutil, else /proc/<pid>/status VmRSS)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def cpu_seconds(pid: int, exclude: int | None = None, tree: bool = False) -> float:
    """User + system CPU seconds of a process (and, with `tree`, its live descendants but `exclude`)."""
    import psutil

    p = psutil.Process(pid)
    procs = [p] + (p.children(recursive=True) if tree else [])
    total = 0.0
    for q in procs:
        if q.pid == exclude:
            continue
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


class SamplerLog:
    """The server's `toydiff: sampled <hash>` lines, read incrementally (one slice per phase)."""

    def __init__(self, path: pathlib.Path):
        self.path, self.offset = path, 0

    def take(self) -> list[str]:
        """Hashes of the sampler runs logged since the last call."""
        with self.path.open() as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        return [m.group(1) for m in SAMPLED.finditer(text)]


# ------------------------------------------------------------------------------------------ browser
def pct(values: list[float], q: float) -> float:
    """q-th percentile (linear interpolation); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(n, times, timeouts, errors, queries, cpu_wall, log, server) -> dict:
    """One phase's row: latency percentiles, failures, sampler runs since the last phase, CPU
    seconds of the generator and the server (`cpu_wall`: CPU before, CPU after, wall seconds)."""
    (gen0, srv0), (gen1, srv1), wall = cpu_wall
    hashes = log.take()
    return dict(
        n=n,
        moves=len(times) + timeouts,
        p50=pct(times, 50),
        p95=pct(times, 95),
        max=max(times, default=float("nan")),
        timeouts=timeouts,
        errors=errors,
        wall=wall,
        runs=len(hashes),
        distinct=len(set(hashes)),
        per_hash=dict(collections.Counter(hashes)),
        gen_cpu=gen1 - gen0,
        server_cpu=srv1 - srv0,
        rss=rss_mb(server.pid),
        queries=sorted(set(queries)),
    )


async def open_page(context, url: str, timeout_ms: int) -> tuple[object, float | None]:
    """(page, seconds from goto to a complete page, None on timeout)."""
    page = await context.new_page()
    return page, await open_page_at(page, url, timeout_ms)


async def open_page_at(page, url: str, timeout_ms: int) -> float | None:
    """Seconds from goto to a complete page, None on timeout."""
    t0 = time.perf_counter()
    try:
        await page.goto(url, timeout=timeout_ms)
        await page.wait_for_function(COMPLETE_JS, arg=None, timeout=timeout_ms, polling=100)
        return time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - a timeout is counted, the run goes on
        return None


def slider(page, label: str, nth: int):
    """The keyboard-focusable thumb of the nth slider whose label contains `label`."""
    return (
        page.locator("[data-testid='stSlider']")  # η, δ in the sidebar; γ, τ above the columns
        .filter(has_text=label)
        .nth(nth)
        .get_by_role("slider")
    )


async def move(
    page, label: str, nth: int, direction: int, timeout_ms: int
) -> tuple[int, float | None]:
    """One arrow key on a slider (reversing at its ends): (direction used, seconds until the rerun
    finished with the new value in the URL and every figure drawn, or None on timeout)."""
    thumb = slider(page, label, nth)
    try:  # any step may time out on an overloaded machine: counted, never raised
        now, lo, hi = await thumb.evaluate(
            "e => [e.value, e.min, e.max].map(Number)", timeout=timeout_ms
        )  # <input type=range>
        if (direction > 0 and now >= hi) or (direction < 0 and now <= lo):
            direction = -direction
        old = await page.evaluate("location.search")
        await thumb.focus(timeout=timeout_ms)
        t0 = time.perf_counter()
        await thumb.press("ArrowRight" if direction > 0 else "ArrowLeft", timeout=timeout_ms)
        await page.wait_for_function(COMPLETE_JS, arg=old, timeout=timeout_ms, polling=50)
        return direction, time.perf_counter() - t0
    except Exception:  # noqa: BLE001
        return direction, None


def reseed(url: str, search: str, seed: int) -> str:
    """The app link of the page's scenes with another seed (toydiff.scenes' own query encoding)."""
    from toydiff import scenes

    pair = scenes_of(search)
    pair = {side: s.replace(seed=seed) for side, s in pair.items()}
    return f"{url}/?{urllib.parse.urlencode(scenes.encode_query(pair))}"


def scenes_of(search: str) -> dict:
    """The pair of Scenes a page's query string encodes (the app's defaults for an empty query)."""
    from toydiff import scenes

    decoded = scenes.decode_query(urllib.parse.parse_qs(search.lstrip("?")))
    if decoded.scenes is None:
        raise ValueError(f"query {search!r} encodes no scenes: {decoded.warnings}")
    return decoded.scenes


async def errors_of(pages) -> int:
    """Total [data-testid='stException'] elements on the pages."""
    return sum([await p.locator(EXCEPTION).count() for p in pages])


async def browser_phases(args, url: str, server, log: SamplerLog) -> dict:
    """Phases 1-3 of the module docstring; returns every number of the report."""
    import psutil
    from playwright.async_api import async_playwright

    out: dict = {}
    me = os.getpid()
    timeout_ms = int(args.timeout * 1000)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        contexts = [
            await browser.new_context(viewport={"width": 1400, "height": 900})
            for _ in range(args.pages)
        ]
        log.take()
        out["rss_start"] = rss_mb(server.pid)

        def cpu():
            return cpu_seconds(me, exclude=server.pid, tree=True), cpu_seconds(server.pid)

        # (1) every page opens the same link at once
        c0, t0 = cpu(), time.perf_counter()
        opened = await asyncio.gather(*(open_page(c, url, timeout_ms) for c in contexts))
        c1, wall = cpu(), time.perf_counter() - t0
        pages = [p for p, _ in opened]
        times = [t for _, t in opened if t is not None]
        searches = [await p.evaluate("location.search") for p in pages]
        out["open"] = summary(
            args.pages,
            times,
            args.pages - len(times),
            await errors_of(pages),
            searches,
            (c0, c1, wall),
            log,
            server,
        )
        base_search = out["open"]["queries"][0]
        if args.client == "protocol":  # (2)-(3) over the websocket, without the browser's CPU
            out["shown"] = [(q, await p.evaluate(TABLE_JS)) for q, p in zip(searches, pages)]
            out["procs"] = len(psutil.Process(me).children(recursive=True))
            await browser.close()
            return out

        # (2) single user: a fresh page on its own seed, η moved --single times with the others idle
        solo_ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
        solo, t = await open_page(solo_ctx, reseed(url, base_search, 999_000), timeout_ms)
        solo_times, direction = [], 1
        for _ in range(args.single):
            direction, t = await move(solo, "sampler η", 0, direction, timeout_ms)
            if t is not None:
                solo_times.append(t)
            await asyncio.sleep(args.think)
        out["single"] = dict(
            n=args.single,
            median=pct(solo_times, 50),
            times=solo_times,
            timeouts=args.single - len(solo_times),
            errors=await errors_of([solo]),
        )
        log.take()

        # (3) movers: own seed each (untimed open), then concurrent keyboard moves for --duration s
        movers = pages[: args.movers]
        reopened = await asyncio.gather(
            *(
                open_page_at(m, reseed(url, base_search, 1000 + i), timeout_ms)
                for i, m in enumerate(movers)
            )
        )
        log.take()
        lat: list[float] = []
        timeouts = [sum(t is None for t in reopened)]  # a mover that never loaded counts too

        async def walk(i: int, page):
            label, nth = SLIDERS[i % len(SLIDERS)]
            direction = 1 if (i // len(SLIDERS)) % 2 == 0 else -1
            end = time.perf_counter() + args.duration
            while time.perf_counter() < end:
                direction, t = await move(page, label, nth, direction, timeout_ms)
                if t is None:
                    timeouts[0] += 1
                else:
                    lat.append(t)
                await asyncio.sleep(args.think)

        c0, t0 = cpu(), time.perf_counter()
        await asyncio.gather(*(walk(i, m) for i, m in enumerate(movers)))
        c1, wall = cpu(), time.perf_counter() - t0
        out["move"] = summary(
            args.movers, lat, timeouts[0], await errors_of(movers), [], (c0, c1, wall), log, server
        )
        out["errors_all"] = await errors_of(pages + [solo])

        # every page's metrics against toydiff.scene.run of the scenes its URL encodes (untimed)
        shown = [
            (await p.evaluate("location.search"), await p.evaluate(TABLE_JS))
            for p in pages + [solo]
        ]
        out["check"] = check_metrics(shown)
        out["procs"] = len(psutil.Process(me).children(recursive=True))
        await browser.close()
    return out


# ------------------------------------------------------------------------------------------ protocol
# What a browser's WidgetStateManager holds for each widget element: (the WidgetState field, the
# value the element shows: its set_value'd value, else its default). Buttons, uploads, downloads
# and components send nothing until used, in the browser too.
def _choice(e, raw: str):
    """Selectbox/radio: the formatted option shown (string_value), None without a default."""
    if e.set_value:
        return raw
    return e.options[e.default] if 0 <= e.default < len(e.options) else None


WIDGET_VALUES = {
    "slider": lambda e: (
        (
            "string_array_value",
            list(e.raw_value) if e.set_value else [e.options[int(i)] for i in e.default],
        )
        if e.options
        else ("double_array_value", list(e.value if e.set_value else e.default))
    ),
    "selectbox": lambda e: ("string_value", _choice(e, e.raw_value)),
    "radio": lambda e: ("string_value", _choice(e, e.raw_value)),
    "checkbox": lambda e: ("bool_value", e.value if e.set_value else e.default),
    "number_input": lambda e: ("double_value", e.value if e.set_value else e.default),
    "text_input": lambda e: ("string_value", e.value if e.set_value else e.default),
}


def widget_state(wid: str, field: str, value) -> object:
    """A WidgetState proto: `value` in `field` (array fields take a list)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    ws = WidgetState(id=wid)
    if field.endswith("_array_value"):
        getattr(ws, field).data[:] = value
    else:
        setattr(ws, field, value)
    return ws


def rerun_msg(query: str, states: dict, page_hash: str, cached: set[str]) -> bytes:
    """The BackMsg a browser sends to (re)run the page: query, every widget's state, cached hashes."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    msg = BackMsg()
    cs = msg.rerun_script
    cs.query_string, cs.page_script_hash = query, page_hash
    cs.widget_states.widgets.extend(states.values())
    cs.cached_message_hashes.extend(sorted(cached))
    return msg.SerializeToString()


class ProtocolSession:
    """One app session over the websocket at /_stcore/stream, as the frontend drives it: a rerun
    BackMsg carries the query string and all widget states; the ForwardMsgs up to script_finished
    are one run. Widget states follow the frontend (a set_value'd element overrides, else the
    stored value stays, else the default; widgets not drawn in a run are dropped), and so does its
    message cache (hashes of cacheable elements are sent back; `ref_hash` replies are resolved)."""

    def __init__(self, url: str, query: str):
        self.url, self.query = url, query.lstrip("?")
        self.states: dict[str, object] = {}  # id -> WidgetState
        self.widgets: dict[str, object] = {}  # id -> element proto, drawing order of the last run
        self.cache: dict[str, object] = {}  # hash -> cacheable ForwardMsg of the last two runs
        self.page_hash, self.ws, self.table = "", None, None

    async def connect(self) -> None:
        import websockets

        host = self.url.split("://", 1)[1]
        self.ws = await websockets.connect(
            f"ws://{host}/_stcore/stream",
            subprotocols=["streamlit"],
            origin=self.url,
            max_size=None,
            ping_interval=None,  # the frontend sends no websocket pings
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def run(self, changed=None, timeout: float = 600.0) -> dict:
        """Reruns the page (with `changed`, a WidgetState, as if the user had set it): the run's
        seconds (None on timeout), charts drawn, exceptions, finish status, metrics table rows."""
        if changed is not None:
            self.states[changed.id] = changed
        t0 = time.perf_counter()
        await self.ws.send(rerun_msg(self.query, self.states, self.page_hash, set(self.cache)))
        try:
            run = await asyncio.wait_for(self._receive(), timeout)
        except TimeoutError:
            self.ws.close_timeout = 1
            await self.close()  # a stuck session is left, as a user would reload
            await self.connect()
            return dict(seconds=None, charts=0, exceptions=0, status=None, table=None)
        run["seconds"] = time.perf_counter() - t0
        return run

    async def _receive(self) -> dict:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        seen: dict[str, object] = {}
        cache: dict[str, object] = {}
        charts = exceptions = 0
        table = None
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(await self.ws.recv())
            kind = msg.WhichOneof("type")
            if kind == "ref_hash":
                msg = self.cache[msg.ref_hash]
                kind = "delta"
            if kind == "new_session":
                self.page_hash = msg.new_session.page_script_hash or self.page_hash
            elif kind == "page_info_changed":
                self.query = msg.page_info_changed.query_string  # the frontend's URL
            elif kind == "script_finished":
                self.states = {i: s for i, s in self.states.items() if i in seen}
                self.widgets, self.cache, self.table = seen, {**self.cache, **cache}, table
                return dict(
                    charts=charts, exceptions=exceptions, status=msg.script_finished, table=table
                )
            if kind != "delta" or msg.delta.WhichOneof("type") != "new_element":
                continue
            if msg.metadata.cacheable:
                cache[msg.hash] = msg
            el = msg.delta.new_element
            etype = el.WhichOneof("type")
            charts += etype == "bidi_component" and bool(el.bidi_component.json)
            exceptions += etype == "exception"
            if etype == "markdown" and "off-support rate" in el.markdown.body:
                table = markdown_rows(el.markdown.body)
            if etype in WIDGET_VALUES:
                self._track(getattr(el, etype), WIDGET_VALUES[etype], seen)

    def _track(self, e, value_of, seen: dict) -> None:
        """Stores the element's shown value as its widget state (frontend rules, see class)."""
        seen[e.id] = e
        if e.set_value or e.id not in self.states:
            field, value = value_of(e)
            if value is not None:
                self.states[e.id] = widget_state(e.id, field, value)

    def step(self, label: str, nth: int, direction: int):
        """(direction, WidgetState) of one arrow-key step on the nth slider whose label contains
        `label`, reversing at its ends, as in the browser mode's `move`."""
        e = [w for w in self.widgets.values() if hasattr(w, "step") and label in w.label][nth]
        ws = self.states[e.id]
        if e.options:  # select_slider: a step is the next option
            now, lo, hi = (
                list(e.options).index(ws.string_array_value.data[0]),
                0,
                len(e.options) - 1,
            )
            step = 1
        else:
            now, lo, hi, step = ws.double_array_value.data[0], e.min, e.max, e.step
        if (direction > 0 and now >= hi) or (direction < 0 and now <= lo):
            direction = -direction
        new = min(max(now + direction * step, lo), hi)
        if e.options:
            return direction, widget_state(e.id, "string_array_value", [e.options[int(new)]])
        return direction, widget_state(e.id, "double_array_value", [round(new, 10)])


def failed(run: dict) -> bool:
    """A run that raised, did not finish normally, or lacks the 8 figures or the metrics table."""
    return bool(run["exceptions"]) or run["status"] != 0 or run["charts"] < 8 or not run["table"]


async def protocol_phases(args, url: str, server, log: SamplerLog, out: dict) -> dict:
    """Phases (1)-(3) of the module docstring with ProtocolSessions ((1) only if the browser did
    not run it); each run is timed from the rerun BackMsg to script_finished."""
    me = os.getpid()
    shown = out.pop("shown", [])

    def cpu():
        return cpu_seconds(me, exclude=server.pid, tree=True), cpu_seconds(server.pid)

    async def open_at(query: str) -> tuple[ProtocolSession, dict]:
        session = ProtocolSession(url, query)
        await session.connect()
        return session, await session.run(timeout=args.timeout)

    def row(n: int, runs: list[dict], cpu_wall, queries=()) -> dict:
        times = [r["seconds"] for r in runs if r["seconds"] is not None]
        done = [r for r in runs if r["seconds"] is not None]
        res = summary(
            n, times, len(runs) - len(done), sum(map(failed, done)), queries, cpu_wall, log, server
        )
        return {**res, "exceptions": sum(r["exceptions"] for r in done)}

    log.take()
    out.setdefault("rss_start", rss_mb(server.pid))
    sessions = []
    if "open" not in out:  # (1) every session opens the shared link at once
        c0, t0 = cpu(), time.perf_counter()
        opened = await asyncio.gather(*(open_at("") for _ in range(args.pages)))
        cpu_wall = (c0, cpu(), time.perf_counter() - t0)
        sessions = [s for s, _ in opened]
        out["open"] = row(
            args.pages, [r for _, r in opened], cpu_wall, [f"?{s.query}" for s in sessions]
        )
        shown += [(s.query, s.table) for s in sessions]
    base = out["open"]["queries"][0].lstrip("?")

    def own_seed(seed: int) -> str:
        return reseed(url, base, seed).split("?", 1)[1]

    # (2) single user on its own seed, η moved --single times with the others idle
    solo, _ = await open_at(own_seed(999_000))
    log.take()
    solo_runs, direction = [], 1
    for _ in range(args.single):
        direction, changed = solo.step("sampler η", 0, direction)
        solo_runs.append(await solo.run(changed, args.timeout))
        await asyncio.sleep(args.think)
    done = [r["seconds"] for r in solo_runs if r["seconds"] is not None]
    out["single"] = dict(
        n=args.single,
        median=pct(done, 50),
        times=done,
        timeouts=args.single - len(done),
        errors=sum(map(failed, solo_runs)),
    )
    log.take()

    # (3) movers: own seed each (untimed open), then concurrent slider steps for --duration s
    reopened = await asyncio.gather(*(open_at(own_seed(1000 + i)) for i in range(args.movers)))
    movers = [s for s, _ in reopened]
    log.take()
    runs: list[dict] = [r for _, r in reopened if r["seconds"] is None]

    async def walk(i: int, session: ProtocolSession):
        label, nth = SLIDERS[i % len(SLIDERS)]
        direction = 1 if (i // len(SLIDERS)) % 2 == 0 else -1
        end = time.perf_counter() + args.duration
        while time.perf_counter() < end:
            direction, changed = session.step(label, nth, direction)
            runs.append(await session.run(changed, args.timeout))
            await asyncio.sleep(args.think)

    c0, t0 = cpu(), time.perf_counter()
    await asyncio.gather(*(walk(i, m) for i, m in enumerate(movers)))
    out["move"] = row(args.movers, runs, (c0, cpu(), time.perf_counter() - t0))
    out["errors_all"] = sum(map(failed, solo_runs + runs))
    out["check"] = check_metrics(shown + [(s.query, s.table) for s in movers + [solo]])
    for s in sessions + movers + [solo]:
        await s.close()
    return out


async def run_phases(args, url: str, server, log: SamplerLog) -> dict:
    """Phase (1) by --open-client, (2)-(3) by --client (the browser closed before the protocol's)."""
    out: dict = {}
    if "browser" in (args.open_client, args.client):
        out = await browser_phases(args, url, server, log)
    if args.client == "protocol":
        out = await protocol_phases(args, url, server, log, out)
    return out


def markdown_rows(body: str) -> list[list[str]]:
    """A markdown table's rows as the browser's cells read (header first, separator dropped)."""
    rows = [
        line.strip().strip("|").split("|") for line in body.splitlines() if line.startswith("|")
    ]
    cells = [[c.strip().replace("**", "") for c in r] for r in rows]
    return [r for r in cells if not all(set(c) <= set("-:") for c in r)]


# ------------------------------------------------------------------------------------------ checking
def cell_value(text: str, fmt: str) -> float:
    """The number a metrics-table cell shows ('12.3% ✓' -> 0.123)."""
    text = text.replace("✓", "").replace("*", "").strip()
    return float(text.rstrip("%")) / 100 if fmt.endswith("%}") else float(text)


def tolerance(fmt: str) -> float:
    """Half a unit of the last displayed digit (plus float slack)."""
    if fmt == "{:d}":
        return 1e-9
    digits = int(re.search(r"\.(\d)", fmt).group(1)) + (2 if fmt.endswith("%}") else 0)
    return 0.5 * 10.0**-digits + 1e-9


def check_metrics(shown: list[tuple[str, list | None]]) -> dict:
    """Compares each page's table with toydiff.scene.run; returns pages, values checked, mismatches."""
    from toydiff import scene as scene_mod
    from toydiff.viz.plots import METRICS

    expected: dict[str, dict] = {}
    pages = checked = 0
    bad: list[str] = []
    for search, rows in shown:
        pages += 1
        if rows is None:
            bad.append(f"{search}: no metrics table")
            continue
        table = {r[0]: r[1:] for r in rows[1:]}
        for i, (side, sc) in enumerate(scenes_of(search).items()):
            key = sc.to_json()
            if key not in expected:
                expected[key] = scene_mod.run(sc)[1]
            for mkey, label, fmt, _ in METRICS:
                want = expected[key].get(mkey)
                row = next((cells for lab, cells in table.items() if lab.startswith(label)), None)
                if (
                    want is None
                    or not (float(want) == float(want))
                    or abs(float(want)) == float("inf")
                ):
                    if row is not None and row[i] != "–":
                        bad.append(f"{search} {side} {mkey}: shows {row[i]}, expected –")
                    continue
                if row is None:
                    bad.append(f"{search} {side} {mkey}: row missing")
                    continue
                if abs(cell_value(row[i], fmt) - float(want)) > tolerance(fmt):
                    bad.append(
                        f"{search} {side} {mkey}: shows {row[i]}, expected {float(want):.6g}"
                    )
                checked += 1
    return dict(pages=pages, scenes=len(expected), checked=checked, mismatches=bad)


# ------------------------------------------------------------------------------------------ memory
def memory_worker(n: int, checkpoints: list[int]) -> None:
    """In a fresh process: the app's cached functions for n distinct scenes; prints RSS per checkpoint."""
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    from toydiff import mixtures
    from toydiff.scene import Scene
    from ui import compute

    info = mixtures.preset_info("three_blobs")  # the app's default page: nCFG left, CCFG right
    common = dict(preset="three_blobs", positive=info.positive, negative=info.negative, gamma=2.0)
    base = {
        "left": Scene(**common, method="ncfg"),
        "right": Scene(**common, method="ccfg", tau=1.0),
    }
    rows = []
    t0 = time.perf_counter()
    for i in range(n):
        sc = base["left" if i % 2 == 0 else "right"].replace(seed=i // 2)
        key = compute.run_key(sc)
        compute.simulate(key, None)
        compute.metrics_of(key, None)
        compute.field_at(key, 500, None)
        compute.background(compute.mix_key(sc), sc.positive, sc.negative, None)
        if i + 1 in checkpoints:
            gc.collect()
            rows.append(
                dict(scenes=i + 1, rss=rss_mb(os.getpid()), seconds=time.perf_counter() - t0)
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        json.dumps(
            dict(
                rows=rows,
                cache_entries=compute.CACHE_ENTRIES,
                resource_entries=compute.RESOURCE_ENTRIES,
            )
        ),
        flush=True,
    )


def memory_phase(args) -> dict:
    """Runs memory_worker in a subprocess (clean RSS); returns its checkpoints and sampler count."""
    checkpoints = sorted(
        c for c in {50, 100, 200, 300, 400, args.memory_scenes} if c <= args.memory_scenes
    )
    err = pathlib.Path(tempfile.mkstemp(suffix=".log")[1])
    cmd = [
        sys.executable,
        __file__,
        "--memory-worker",
        str(args.memory_scenes),
        "--checkpoints",
        ",".join(map(str, checkpoints)),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err.open("w"), text=True)
    text = err.read_text()
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{text[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    hashes = [m.group(1) for m in SAMPLED.finditer(text)]
    result.update(runs=len(hashes), distinct=len(set(hashes)), wall=time.perf_counter() - t0)
    return result


# ------------------------------------------------------------------------------------------ report
CLIENTS = {
    "browser": "by headless Chromium pages (one browser, one context per page)",
    "protocol": "by protocol-level sessions (websocket /_stcore/stream, no browser)",
}


UNTIL = {  # what a phase's latency is timed to, per client: (opening, moving)
    "browser": ("to a complete page", "to updated figures"),
    "protocol": ("to script_finished", "to script_finished"),
}


def client_notes(args, b: dict) -> list[str]:
    """The report's lines on who generated the load and what its CPU seconds include."""
    browser = (
        f"Generator CPU with Chromium = this process + Playwright's driver + Chromium (all "
        f"{b.get('procs', 0)} child processes); on these 2 shared cores it competes with the "
        "server, so a page's latency includes the browser's own rendering of 8 Plotly figures."
    )
    if args.client == "browser":
        return [f"- {browser}"]
    return [
        f"- Client of (2)-(3): **protocol** (`--client protocol`; (1): `--open-client "
        f"{args.open_client}`). Each session speaks the frontend's protocol to the real "
        "`streamlit run app.py`: a `BackMsg.rerun_script` with the page's query string, page hash, "
        "every widget's state (the changed slider's new value) and its cached message hashes; a "
        "move is timed from that message to `script_finished`, and counts as an error if the run "
        "sent an exception, did not finish normally, or lacked the 8 figure components or the "
        "metrics table. It draws nothing: the time a browser takes to render is not included.",
        "- Generator CPU of the protocol phases = this process only"
        + (
            f" (Chromium, which drove (1), was closed before (2)). {browser}"
            if args.open_client == "browser"
            else "."
        ),
        f"- Protocol runs that failed: single {b['single']['errors']}, movers {b['move']['errors']} "
        f"({b['move'].get('exceptions', 0)} exception elements).",
    ]


def report(args, b: dict | None, m: dict | None, load: tuple) -> str:
    """The markdown report with the acceptance verdicts."""
    lines = [
        "# Load: many concurrent sessions on one server",
        "",
        f"`benchmarks/load.py` ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} shared CPU cores, "
        f"1-min load average at start {load[0]:.2f}). Command: "
        f"`.venv/bin/python benchmarks/load.py {' '.join(sys.argv[1:])}`".rstrip()
        + "",
        "",
    ]
    verdicts = []
    if b:
        o, s, mv, ch = b["open"], b["single"], b["move"], b["check"]
        ratio = (
            mv["p95"] / s["median"]
            if s["median"] == s["median"] and s["median"] > 0
            else float("nan")
        )
        share_open = o["gen_cpu"] / max(o["gen_cpu"] + o["server_cpu"], 1e-9)
        share_move = mv["gen_cpu"] / max(mv["gen_cpu"] + mv["server_cpu"], 1e-9)
        lines += [
            f"## Sessions: one server; (1) {CLIENTS[args.open_client]}, (2)-(3) "
            f"{CLIENTS[args.client]}",
            "",
            "| phase | pages | p50 s | p95 s | max s | timeouts | exceptions | sampler runs (distinct) "
            "| server CPU s | generator CPU s (share) | server RSS MiB after |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| server idle, before any page | | | | | | | | | | {b['rss_start']:.0f} |",
            f"| (1) {o['n']} pages open the same link at once ({UNTIL[args.open_client][0]}) | {o['n']} "
            f"| {o['p50']:.2f} | {o['p95']:.2f} | {o['max']:.2f} | {o['timeouts']} | {o['errors']} "
            f"| {o['runs']} ({o['distinct']}) "
            f"| {o['server_cpu']:.1f} | {o['gen_cpu']:.1f} ({share_open:.0%}) | {o['rss']:.0f} |",
            f"| (2) single user, η moved {s['n']}× alone ({UNTIL[args.client][1]}) | 1 | {s['median']:.2f} "
            f"| | {max(s['times'], default=float('nan')):.2f} | {s['timeouts']} | {s['errors']} | | | | |",
            f"| (3) {mv['n']} pages move sliders for {args.duration:g} s, {args.think:g} s think time "
            f"({mv['moves']} moves) | {mv['n']} | {mv['p50']:.2f} | {mv['p95']:.2f} | {mv['max']:.2f} "
            f"| {mv['timeouts']} | {mv['errors']} | {mv['runs']} ({mv['distinct']}) | {mv['server_cpu']:.1f} "
            f"| {mv['gen_cpu']:.1f} ({share_move:.0%}) | {mv['rss']:.0f} |",
            "",
            f"- Link opened: `{o['queries']}` (the URL the app wrote back). Sampler runs per distinct "
            f"scene in (1): {sorted(o['per_hash'].values())} — one per column, not one per page.",
            f"- Single-user median {s['median']:.2f} s (values {', '.join(f'{t:.2f}' for t in s['times'])});"
            f" concurrent p95 / single median = **{ratio:.1f}×**.",
            "- Movers each opened their own seed first (untimed), so each move is a sampler run, not a "
            "cache hit of another page; each walks one slider (η, δ, left γ, right γ, right τ; two "
            "directions), reversing at the ends (revisits are cache hits).",
            *client_notes(args, b),
            f"- Metrics check: {ch['pages']} pages, {ch['scenes']} distinct scenes, {ch['checked']} values "
            f"compared with `toydiff.scene.run` within display precision: {len(ch['mismatches'])} mismatches"
            + ("" if not ch["mismatches"] else ": " + "; ".join(ch["mismatches"][:5])),
            "",
        ]
        verdicts += [
            ("30 identical opens: 0 errors, 0 timeouts", o["errors"] == 0 and o["timeouts"] == 0),
            ("every page's metrics correct", not ch["mismatches"] and ch["checked"] > 0),
            ("sampler ran once per distinct scene in (1)", o["runs"] == o["distinct"]),
            ("movers: 0 errors, 0 timeouts", mv["errors"] == 0 and mv["timeouts"] == 0),
            ("movers: p95 ≤ 10× single-user median", ratio <= 10),
        ]
    if m:
        rows = m["rows"]
        r50 = next(r["rss"] for r in rows if r["scenes"] == 50)
        last = rows[-1]
        lines += [
            f"## Memory: {last['scenes']} distinct scenes through the app's cached functions",
            "",
            "In one fresh process, `ui/compute.py`'s `simulate`, `metrics_of`, `field_at(t=500)` and "
            "`background` (exactly the calls a page makes per column, with the server's `st.cache_*` "
            "bounds; no Streamlit runtime) for the default nCFG/CCFG pair at seeds 0, 1, 2, … "
            f"(each scene distinct). Bounds: TOYDIFF_CACHE_ENTRIES = {m['cache_entries']}, "
            f"TOYDIFF_RESOURCE_ENTRIES = {m['resource_entries']}. Sampler runs logged: {m['runs']} "
            f"({m['distinct']} distinct). The browser path is too slow for this on 2 cores (≈ 1 page/s).",
            "",
            "| scenes | RSS MiB | seconds |",
            "|---:|---:|---:|",
            *[f"| {r['scenes']} | {r['rss']:.0f} | {r['seconds']:.0f} |" for r in rows],
            "",
            f"RSS after {last['scenes']} / after 50 = **{last['rss'] / r50:.2f}×**.",
            "",
        ]
        verdicts.append(
            (f"RSS after {last['scenes']} ≤ 1.5× RSS after 50", last["rss"] <= 1.5 * r50)
        )
    lines += ["## Acceptance", "", "| check | result |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else '**FAIL**'} |" for name, ok in verdicts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--pages", type=int, default=30, help="browser pages opening the same link (30)")
    p.add_argument("--movers", type=int, default=10, help="pages that then move sliders (10)")
    p.add_argument(
        "--duration", type=float, default=60.0, help="seconds of concurrent slider moves (60)"
    )
    p.add_argument(
        "--think", type=float, default=1.0, help="seconds a user waits between moves (1)"
    )
    p.add_argument(
        "--single", type=int, default=8, help="single-user slider moves for the median (8)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds before a page counts as timed out (600)",
    )
    p.add_argument(
        "--memory-scenes",
        type=int,
        default=500,
        help="distinct scenes in memory mode (500; 0 = skip)",
    )
    p.add_argument(
        "--client",
        choices=("protocol", "browser"),
        default="protocol",
        help="who drives (2)-(3): websocket sessions (default) or Chromium pages",
    )
    p.add_argument(
        "--open-client",
        choices=("browser", "protocol"),
        default="browser",
        help="who drives (1), the same-link opens: Chromium pages (default) or websocket sessions",
    )
    p.add_argument("--no-browser", action="store_true", help="memory mode only")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/load.md"), help="report path")
    p.add_argument("--memory-worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--checkpoints", default="50", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_worker:
        memory_worker(args.memory_worker, [int(c) for c in args.checkpoints.split(",")])
        return 0
    load = os.getloadavg()
    b = m = None
    if not args.no_browser:
        port = free_port()
        log_path = pathlib.Path(tempfile.mkstemp(suffix=".stderr.log")[1])
        server = start_app(port, log_path)  # stdout and stderr: the sampler lines
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, server, timeout=90.0)
            b = asyncio.run(run_phases(args, url, server, SamplerLog(log_path)))
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        print(json.dumps({k: v for k, v in b.items()}, default=str, indent=1), flush=True)
    if args.memory_scenes:
        m = memory_phase(args)
        print(json.dumps(m, indent=1), flush=True)
    text = report(args, b, m, load)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(text)
    print(text)
    return 0 if "**FAIL**" not in text else 1


if __name__ == "__main__":
    sys.exit(main())
