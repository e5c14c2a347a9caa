"""Fixtures for the real-browser tests: a Streamlit server on a free port and headless Chromium."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
# JAX's persistent compilation cache, shared by the test workers, the app run in-process by AppTest
# and the Streamlit servers the tests start: the app's folder (.jax_cache, or TOYDIFF_JAX_CACHE), so
# that a sampler compiled once is loaded (≈ 16 ms) by every other process. Switched on before the
# first JAX operation. (Runs with it crashed before the memory-map bound below existed: that, not
# the cache, was the cause.) TOYDIFF_JAX_CACHE='' switches it off.
os.environ.setdefault("TOYDIFF_JAX_CACHE", str(ROOT / ".jax_cache"))
if os.environ["TOYDIFF_JAX_CACHE"]:
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["TOYDIFF_JAX_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
# Every compiled CPU executable holds about three memory maps until JAX's caches drop it. One
# process running the whole suite crossed Linux's vm.max_map_count (65530) near test 530 and XLA's
# JIT crashed (SIGSEGV/SIGABRT, fresh-clone CI, 2026-12-06; 32 877 maps after 111 tests).
MAX_MAPS = 20_000


def _server_cache(root: pathlib.Path) -> str:
    """A server's JAX cache folder: a caller's TOYDIFF_JAX_CACHE (benchmarks/app_latency.py sets
    one), else the app's default."""
    return os.environ["TOYDIFF_JAX_CACHE"] or str(root / ".jax_cache")


def memory_maps() -> int:
    """How many memory maps this process holds (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


@pytest.fixture(autouse=True)
def _bounded_jax_caches():
    """Drops JAX's compiled executables after a test that left more than MAX_MAPS memory maps."""
    yield
    if memory_maps() > MAX_MAPS:
        import jax

        jax.clear_caches()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(
    port: int, log: pathlib.Path, root: pathlib.Path = ROOT, python: str = sys.executable
) -> subprocess.Popen:
    """`streamlit run app.py` in `root` (default: this checkout) with the interpreter `python`
    (default: this one), headless on 127.0.0.1:port, output to `log`."""
    cmd = [
        python,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    return subprocess.Popen(
        cmd,
        cwd=root,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TOYDIFF_JAX_CACHE": _server_cache(root),
        },
    )


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0):
    """Blocks until /_stcore/health answers ok; raises if the server died or never answered."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url}/_stcore/health did not answer in {timeout} s")


def wait_idle(page, timeout_ms: int = 120_000):
    """Waits until the app is connected and its script run has finished."""
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout_ms
    )
    page.wait_for_selector(IDLE, timeout=timeout_ms)


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
        )
    port = free_port()
    proc = start_app(port, tmp_path_factory.mktemp("streamlit") / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser(app_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.goto(app_url)
    wait_idle(page)
    page.wait_for_function(
        "document.querySelectorAll('.js-plotly-plot').length >= 8", timeout=120_000
    )
    yield page
    context.close()
