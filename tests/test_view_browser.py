"""`recursa view` in a real headless browser (Debian's chromium driven by Playwright): what a person sees.

The run folders are written by the real methods and bench with a scripted model (tests/view_data.py). Set
RECURSA_VIEW_SCREENSHOTS=DIR to keep screenshots of the runs, run and bench pages (bench/results/view/ holds them).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import uvicorn
import view_data

from recursa.methods.aime.board import BoardTask, ProgressBoard
from recursa.view.server import create_app, listen

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
CHROMIUM = os.environ.get("RECURSA_CHROMIUM") or next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (`make install` installs it "
                                "with apt-get when run as root)")
SHOTS = os.environ.get("RECURSA_VIEW_SCREENSHOTS")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The viewer over freshly written runs, served by uvicorn on a free loopback port for the module."""
    root = tmp_path_factory.mktemp("runs")
    keys = view_data.build_runs(root)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(root), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/", root, keys
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.close()
    assert errors == [], f"JavaScript errors: {errors}"


def screenshot(page, name: str, top=None) -> None:
    """The visible part of the page (from `top`, a locator scrolled to the top), or the whole page if shorter."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        if top is not None:
            top.evaluate("e => e.scrollIntoView()")
        height = min(800, page.evaluate("document.documentElement.scrollHeight"))
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), clip={"x": 0, "y": 0, "width": 1280, "height": height}
                        if top is None else None)


def test_runs_list_shows_each_run_and_search_narrows_it(page, site):
    url, _, keys = site
    page.goto(url + "#/runs")
    rlm_row = page.locator(f"#runs tr[data-key='{keys['rlm']}']")
    sync_api.expect(rlm_row).to_contain_text(view_data.RLM_QUESTION)
    sync_api.expect(rlm_row).to_contain_text("5138149")
    sync_api.expect(rlm_row).to_contain_text("done")
    sync_api.expect(page.locator(f"#runs tr[data-key='{keys['text_mas']}']")).to_contain_text("text-mas")
    sync_api.expect(page.locator(f"#runs tr[data-key='{keys['torn']}']")).to_contain_text("2 bad lines")
    screenshot(page, "runs")
    page.fill("#search", "accra")
    sync_api.expect(page.locator("#runs tbody tr")).to_have_count(1)
    sync_api.expect(page.locator("#runs tbody tr")).to_have_attribute("data-key", keys["rlm"])
    page.fill("#search", "nothing matches this")
    sync_api.expect(page.locator("#runs tbody")).to_contain_text("No run matches.")


def test_expanding_an_rlm_iteration_shows_its_code_and_repl_output(page, site):
    url, _, keys = site
    page.goto(url + "#/runs")
    page.click(f"#runs tr[data-key='{keys['rlm']}'] a")
    sync_api.expect(page.locator("#summary")).to_contain_text(view_data.RLM_QUESTION)
    iteration = page.locator("details.node-rlm_iteration").first
    output = iteration.locator("details.node-repl_block .field-output pre")
    sync_api.expect(output).to_be_hidden()                              # collapsed until a person opens it
    iteration.locator(":scope > summary").click()
    block = iteration.locator("details.node-repl_block")
    block.locator(":scope > summary").click()
    sync_api.expect(output).to_be_visible()
    sync_api.expect(output).to_contain_text("The special magic number for Accra is 5138149")
    sync_api.expect(block.locator(".field-code pre")).to_contain_text("llm_query_batched(['one', 'two'])")
    sub_call = block.locator("details.node-sub_call")
    sync_api.expect(sub_call.locator(":scope > summary")).to_contain_text("2 prompts")
    sub_call.locator(":scope > summary").click()                        # each sub-call's prompt and answer
    sync_api.expect(sub_call.locator(".exchanges li").nth(1)).to_contain_text("sub:two")
    screenshot(page, "run", top=iteration)


def test_bench_table_shows_each_methods_accuracy_and_filters_problems(page, site):
    url, _, _ = site
    page.goto(url + "#/benches")
    page.click("#benches a:text('bench-toy')")
    sync_api.expect(page.locator("#summary-table tr[data-method='single'] .accuracy")).to_have_text("60.0%")
    sync_api.expect(page.locator("#summary-table tr[data-method='text-mas'] .accuracy")).to_have_text("80.0%")
    sync_api.expect(page.locator("#accuracy-plot")).to_contain_text("80.0%")
    sync_api.expect(page.locator("details.problem")).to_have_count(5)
    page.select_option("#problem-filter", "disagree")
    sync_api.expect(page.locator("details.problem")).to_have_count(1)
    problem = page.locator("details.problem[data-id='p3']")
    problem.locator(":scope > summary").click()
    sync_api.expect(problem.locator(".side[data-method='single']")).to_contain_text("✗ 0")
    sync_api.expect(problem.locator(".side[data-method='text-mas']")).to_contain_text("✓ 3")
    page.select_option("#problem-filter", "all_fail")
    sync_api.expect(page.locator("details.problem")).to_have_count(1)
    sync_api.expect(page.locator("details.problem")).to_have_attribute("data-id", "p1")
    page.select_option("#problem-filter", "all")
    page.locator("details.problem[data-id='p3'] > summary").click()
    screenshot(page, "bench")


def test_a_corrupt_trace_shows_its_error_lines_and_the_rest(page, site):
    url, _, keys = site
    page.goto(url + f"#/run/{keys['torn']}")
    errors = page.locator("#trace-errors .error-line")
    sync_api.expect(errors.first).to_contain_text("line 2 is not valid JSON")
    sync_api.expect(errors.last).to_contain_text("is incomplete")
    sync_api.expect(page.locator("details.node-rlm_iteration > summary").last).to_contain_text("iteration 2")
    page.goto(url + "#/run/traces/no-such-run")
    missing = page.locator(".error-line", has_text="no trace 'traces/no-such-run.jsonl'")
    sync_api.expect(missing).to_be_visible()
    sync_api.expect(page.locator("#trace-errors")).to_have_count(0)        # the page was replaced by the message


def test_the_aime_board_updates_while_the_page_is_open(page, site):
    url, root, keys = site
    page.goto(url + f"#/run/{keys['aime']}")
    sync_api.expect(page.locator("#board li.task[data-task='1']")).to_contain_text("Write a.txt")
    board = ProgressBoard(next(root.glob("aime/*/board.sqlite")))
    board.add_task(BoardTask("7", "Read a.txt back"))
    board.close()
    sync_api.expect(page.locator("#board li.task[data-task='7']")).to_contain_text("Read a.txt back", timeout=8000)
