"""The web app in a real browser: Playwright for Python driving Debian's Chromium against a
real API and worker (embedded defaults, authentication on), with every host but the API's
unreachable, so the page can only work with what Keiko itself serves."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.services import in_ci
from tests.stack import Stack, stack_env

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "locale(name): the browser's locale (default en-US)")
    config.addinivalue_line("markers", "no_key: open the page without the API key stored")


def chromium_path() -> str | None:
    found = os.environ.get("KEIKO_CHROMIUM") or shutil.which("chromium")
    return found or (None if not Path("/usr/bin/chromium").exists() else "/usr/bin/chromium")


# Package scope: the deployment and the browser (whose sync API keeps an event loop running
# in this thread) end with the browser tests, not with the whole run.
@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("browser")
    # Progress a few times a second and a quick poll, so pages move while the tests watch.
    env = stack_env(data_dir, KEIKO_PROGRESS_SECONDS="0.2", KEIKO_EVENT_POLL_SECONDS="0.2")
    running = Stack("browser", data_dir, env)
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="package")
def key(stack: Stack) -> str:
    """The test user's API key (the stack's client sends it)."""
    return str(stack.http().headers["Authorization"]).removeprefix("Bearer ")


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        message = "Chromium is not installed (apt-get install chromium; ./keiko.sh test does)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class OfflinePage:
    """What the page fixture saw: requests it refused (other hosts) and script errors."""

    def __init__(self) -> None:
        self.blocked: list[str] = []
        self.errors: list[str] = []


@pytest.fixture
def offline() -> OfflinePage:
    return OfflinePage()


@pytest.fixture
def page(
    request: pytest.FixtureRequest, browser: Any, stack: Stack, key: str, offline: OfflinePage
) -> Iterator[Any]:
    """A fresh browser context and page at the API's address (not yet navigated). Every
    request to another host is aborted and recorded; the test fails if the page tried one
    or threw a script error. The key is in sessionStorage unless the test is `no_key`."""
    marker = request.node.get_closest_marker("locale")
    locale = marker.args[0] if marker else "en-US"
    context = browser.new_context(
        locale=locale, viewport={"width": 1280, "height": 900}, base_url=stack.base_url
    )
    api_host = urlsplit(stack.base_url).netloc

    def only_the_api(route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.netloc == api_host:
            route.continue_()
        else:
            offline.blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_the_api)
    if request.node.get_closest_marker("no_key") is None:
        context.add_init_script(f"sessionStorage.setItem('keiko.key', {json.dumps(key)});")
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    opened.on("pageerror", lambda exc: offline.errors.append(str(exc)))
    try:
        yield opened
    finally:
        context.close()
    assert not offline.blocked, f"the page asked for other hosts: {offline.blocked}"
    assert not offline.errors, f"script errors on the page: {offline.errors}"


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("KEIKO_SCREENSHOT_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def screenshot(screenshot_dir: Path) -> Callable[[Any, str], Path]:
    """screenshot(page, "job.png"): the whole page, under $KEIKO_SCREENSHOT_DIR (the README's
    pictures in docs/screenshots/ come from a run with it set)."""

    def take(page: Any, name: str) -> Path:
        path = screenshot_dir / name
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
