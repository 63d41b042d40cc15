"""The live page in headless Chromium: log in, watch a real run rise, see its results plotted.

Everything is real: the API and projector on Kafka, the runner with the SHIELD-HIT12A
stand-in, Debian's Chromium driven by Playwright (never a downloaded browser), Plotly
served by the API from the project's npm install.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, async_playwright

from devstack import chromium
from tests.api.conftest import Realm, call
from tests.api.streams import live_stack, runner_for, submit_files
from tests.conftest import fresh_topics
from tests.runner.conftest import fake_simulator_exe

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

#: Records every value the page's overall progress bar shows, as the DOM changes.
RECORD_PROGRESS = """
window.__progress = [];
new MutationObserver((changes) => {
  for (const change of changes) {
    if (change.target.id === "overall-progress") {
      window.__progress.push(Number(change.target.getAttribute("value")));
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["value"]});
"""


@pytest.fixture(scope="session")
def chromium_binary() -> Path:
    return chromium.ensure_installed()


async def test_live_page_shows_progress_then_plots(
        kafka_bootstrap: str, realm: Realm, tmp_path: Path, chromium_binary: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "0.3")
    kafka = await fresh_topics(kafka_bootstrap)
    async with live_stack(kafka, tmp_path / "state", realm) as stack, async_playwright() as pw:
        name = f"u{uuid.uuid4().hex[:8]}"
        session = await stack.user(name)
        job_id = await submit_files(session, ntasks=2, nstat=2000)
        base = str(stack.server.make_url("/")).rstrip("/")
        problems: list[str] = []
        browser = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(chromium_binary), headless=True,
            args=list(chromium.LAUNCH_ARGS))
        try:
            page = await browser.new_page()
            page.on("console", lambda m: _problem(problems, m))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            await page.add_init_script(RECORD_PROGRESS)
            await page.goto(f"{base}/live?job_id={job_id}")
            await page.fill("input[name=username]", name)
            await page.fill("input[name=password]", "pw-" + name)
            await page.click("button[type=submit]")
            await page.wait_for_selector("body[data-job-state=PENDING]")
            # The page follows the job before it runs, so it sees all of its progress.
            async with runner_for(stack, fake_simulator_exe(tmp_path), tmp_path / "work"):
                await page.wait_for_selector("body[data-results=drawn]", timeout=150_000)
            await page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            shown: list[float] = await page.evaluate("window.__progress")
            state = await page.text_content("#job-state")
            rows = await page.eval_on_selector_all(
                "#tasks tbody tr", "rows => rows.map(r => r.cells[1].textContent)")
            plots: list[dict[str, Any]] = await page.evaluate("""() =>
                [...document.querySelectorAll('.js-plotly-plot')].map(div => ({
                  id: div.id, type: div.data[0].type, x: div.data[0].x,
                  y: div.data[0].y, z: div.data[0].z || null,
                  errors: div.data[0].error_y ? div.data[0].error_y.array : null,
                  drawn: div.querySelectorAll('.scatterlayer .trace, .heatmaplayer image')
                            .length}))""")
        finally:
            await browser.close()
        code, results = await call(session, "GET", f"/results?job_id={job_id}")

    assert not problems, problems
    # The progress bar rose: several values between nothing and everything, never back.
    assert shown == sorted(shown), shown
    assert len({v for v in shown if 0 < v < 1}) >= 3, shown
    assert shown[-1] == 1
    assert state == "COMPLETED" and rows == ["COMPLETED", "COMPLETED"]
    # The plots are the results: a depth-dose curve and a 2-D map.
    assert code == 200
    profile, dose_map = (e["pages"][0] for e in results["estimators"])
    assert [p["id"] for p in plots] == ["plot-0-0", "plot-1-0"]
    curve, heat = plots
    assert curve["type"] == "scatter" and curve["drawn"] == 1
    assert curve["x"] == profile["axis_dim1"]["values"] and len(curve["x"]) == 40
    assert curve["y"] == profile["data"]["values"]
    assert curve["errors"] == profile["data"]["error"]  # two tasks: a standard error
    assert heat["type"] == "heatmap" and heat["drawn"] == 1
    xs, ys = dose_map["axis_dim1"]["values"], dose_map["axis_dim2"]["values"]
    assert heat["x"] == xs and heat["y"] == ys
    values = dose_map["data"]["values"]
    assert heat["z"] == [[values[i * len(ys) + j] for i in range(len(xs))]
                         for j in range(len(ys))]
    assert (tmp_path / "live.png").stat().st_size > 0


def _problem(problems: list[str], message: ConsoleMessage) -> None:
    """Console errors and warnings, except the 401 of asking whether we are logged in."""
    url = message.location.get("url", "")
    if message.type in ("error", "warning") and not (
            url.endswith("/auth/status") and "401" in message.text):
        problems.append(f"console {message.type}: {message.text} ({url})")
