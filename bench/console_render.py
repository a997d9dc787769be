"""Measures the console's first render in headless Chromium, for bench/console.rs (which seeds
the store, starts the service without a token, so the console opens straight on the list, and
reads this script's one line of JSON from stdout).

Environment: CONSOLE_BASE (the service), RUNS (page loads to time), CHROMIUM and CHROMEDRIVER
(Debian's paths by default).

Each run opens /console/#/domains in a new tab and reads, from the page's own clock:
- first_render_ms: navigation start to the list on screen (the console's `domains-rendered`
  mark), everything included: the page, its script and style sheet, GET /whoami and the first
  GET /domains page of 50;
- api_ms: the GET /domains request's own time, as Resource Timing saw it;
- search_ms: a GET /domains?name= search made from the page afterwards;
- static_ms: in the same browser, a page holding the same 50 rows as plain HTML (built from
  the console's first page, loaded as a data: URL): navigation start to its load event.
The first run starts with an empty cache (weights as sent: page_bytes); the later ones
revalidate the assets (304).
"""

import json
import os
import statistics

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as when
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["CONSOLE_BASE"].rstrip("/")
RUNS = int(os.environ.get("RUNS", "10"))


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1000"):
        options.add_argument(flag)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def one_load(driver):
    driver.switch_to.new_window("tab")
    driver.get(BASE + "/console/#/domains")
    WebDriverWait(driver, 60, poll_frequency=0.05).until(
        lambda d: d.execute_script("return performance.getEntriesByName('domains-rendered').length > 0"))
    timings = driver.execute_script("""
        const mark = performance.getEntriesByName('domains-rendered')[0];
        const resources = performance.getEntriesByType('resource');
        const list = resources.find((r) => r.name.includes('/domains?'));
        const navigation = performance.getEntriesByType('navigation')[0];
        const sent = [navigation, ...resources.filter((r) => !r.name.includes('/events'))];
        return {
          first_render_ms: mark.startTime,
          api_ms: list ? list.duration : null,
          page_bytes: sent.reduce((sum, r) => sum + (r.transferSize || 0), 0),
          decoded_bytes: sent.reduce((sum, r) => sum + (r.decodedBodySize || 0), 0),
          list_json_bytes: list ? list.decodedBodySize : null,
          rows: document.querySelectorAll('#domain-table tbody tr').length,
        };
    """)
    timings["search_ms"] = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const start = performance.now();
        fetch('/domains?name=shop7777.&limit=50', {cache: 'no-store'}).then((r) => r.json())
          .then(() => done(performance.now() - start)).catch(() => done(null));
    """)
    rows_html = driver.execute_script("return document.querySelector('#domain-table').outerHTML")
    driver.close()
    remaining = driver.window_handles
    driver.switch_to.window(remaining[0])
    return timings, rows_html


def static_load(driver, rows_html):
    """The same rows as a plain page, without the console: what any page showing them costs."""
    page = "<!doctype html><html><head><meta charset=utf-8><title>static</title></head><body>" + rows_html + "</body></html>"
    driver.switch_to.new_window("tab")
    driver.get("data:text/html;charset=utf-8," + page.replace("%", "%25").replace("#", "%23"))
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    elapsed = driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
    driver.close()
    driver.switch_to.window(driver.window_handles[0])
    return elapsed


def main():
    driver = browser()
    results = []
    try:
        driver.get("about:blank")
        for _ in range(RUNS):
            timings, rows_html = one_load(driver)
            timings["static_ms"] = static_load(driver, rows_html)
            results.append(timings)
    finally:
        driver.quit()
    print(json.dumps({"runs": results}))


if __name__ == "__main__":
    main()
