"""The console in a real browser: headless Chromium (Debian's), driven through its ChromeDriver
by Selenium, against the real service on Pebble. tests/e2e/console.rs starts the service,
Pebble and the domains this script expects, runs it with the environment below, and fails
when it exits non-zero.

Environment:
  CONSOLE_BASE       the service's base URL, e.g. http://127.0.0.1:8080
  ADMIN_TOKEN        the service's AUTH_TOKEN
  AUDITOR_TOKEN      one of its READ_ONLY_TOKENS
  CHALLTESTSRV       pebble-challtestsrv's management URL (the test publishes records there,
                     as a person would at their DNS provider)
  ACTIVE_DOMAIN_ID   an active domain, with a signed checkpoint covering its events
  PENDING_DOMAIN_ID  a registered domain whose ownership is not proven
  FAILED_DOMAIN_ID   a domain whose order failed
  NEW_DOMAIN         a name to register through the console
  SCREENSHOTS        where to save a PNG of every page
  AXE_CORE_JS        axe-core's axe.min.js
  PHASE              `main` (default): everything above; `foreign-checkpoint`: the latest
                     checkpoint was replaced by one signed with FOREIGN_KEY, and only that is
                     checked (the auditor must not see it verified)
  FOREIGN_KEY        the foreign checkpoint's public key (phase foreign-checkpoint)
  CHROMIUM, CHROMEDRIVER (optional) the browser and its driver; Debian's paths by default

Each check prints a line; the first that fails raises and ends the run with exit code 1.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as when
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE = os.environ["CONSOLE_BASE"].rstrip("/")
ADMIN_TOKEN = os.environ["ADMIN_TOKEN"]
AUDITOR_TOKEN = os.environ["AUDITOR_TOKEN"]
CHALLTESTSRV = os.environ["CHALLTESTSRV"].rstrip("/")
ACTIVE_DOMAIN_ID = os.environ["ACTIVE_DOMAIN_ID"]
PENDING_DOMAIN_ID = os.environ["PENDING_DOMAIN_ID"]
FAILED_DOMAIN_ID = os.environ.get("FAILED_DOMAIN_ID", "")
PHASE = os.environ.get("PHASE", "main")
FOREIGN_KEY = os.environ.get("FOREIGN_KEY", "")
# A well-formed Ed25519 public key that signed nothing here (32 bytes, standard base64).
STRANGER_KEY = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
NEW_DOMAIN = os.environ["NEW_DOMAIN"]
SCREENSHOTS = os.environ["SCREENSHOTS"]
AXE_CORE_JS = open(os.environ["AXE_CORE_JS"], encoding="utf-8").read()

# Waits long enough for a loaded two-core machine: Pebble validates, the poller looks up.
SHORT = 15
LONG = 120


def check(condition, sentence, detail=""):
    """Prints the sentence when it holds; raises with the detail when it does not."""
    if not condition:
        raise AssertionError(f"NOT TRUE: {sentence} {detail}")
    print(f"ok: {sentence}", flush=True)


def api(method, path, token, body=None):
    """Calls the service's API directly: (status, parsed body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def publish_txt(host, value):
    """Publishes a TXT record at pebble-challtestsrv, as the domain's owner would."""
    request = urllib.request.Request(
        CHALLTESTSRV + "/set-txt",
        data=json.dumps({"host": host, "value": value}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.status


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(60)
    return driver


def wait(driver, seconds=SHORT):
    # The page redraws itself as the feed brings events: an element found a moment ago may be
    # replaced by its new copy, so a wait looks again rather than failing on the old one.
    return WebDriverWait(
        driver,
        seconds,
        poll_frequency=0.2,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )


def shown_records(driver):
    """The records the page shows to publish now, as (name, value), read in one step."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#records-now .record'),"
        " (r) => [r.dataset.recordName, r.dataset.recordValue])"
    )


def shoot(driver, name):
    path = os.path.join(SCREENSHOTS, f"{name}.png")
    driver.save_screenshot(path)
    print(f"screenshot: {path}", flush=True)


def axe(driver, page):
    """Runs axe-core (WCAG 2 A and AA rules) on the page; fails on any serious or critical
    violation."""
    driver.execute_script(AXE_CORE_JS)
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
          .then((r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' '))}))))
          .catch((e) => done([{id: 'axe-failed', impact: 'critical', help: String(e), nodes: []}]));
        """
    )
    serious = [v for v in result if v["impact"] in ("serious", "critical")]
    minor = [v["id"] for v in result if v not in serious]
    check(not serious, f"axe-core finds no serious violation on the {page} page", json.dumps(serious))
    if minor:
        print(f"  (minor findings on the {page} page: {', '.join(minor)})", flush=True)


def sign_in(driver, token):
    field = wait(driver).until(when.element_to_be_clickable((By.ID, "token")))
    field.clear()
    # Typed and sent with the keyboard, as an operator would.
    field.send_keys(token, Keys.ENTER)
    wait(driver).until(when.visibility_of_element_located((By.ID, "sections")))


def no_token_left(driver, token, where):
    """The token is in no URL, no storage and no cookie of the page."""
    check(token not in driver.current_url, f"the token is not in the URL ({where})")
    stored = driver.execute_script(
        "return JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])"
    )
    check(token not in stored, f"the token is in no storage and no cookie ({where})", stored)
    check(stored == '[[],[],""]', f"the console stores nothing in the browser ({where})", stored)


def open_domain_from_list(driver, domain_id):
    link = wait(driver).until(
        when.element_to_be_clickable((By.CSS_SELECTOR, f'tr[data-domain-id="{domain_id}"] a'))
    )
    link.send_keys(Keys.ENTER)
    wait(driver).until(when.presence_of_element_located((By.ID, "domain-status")))


def confirm(driver):
    wait(driver).until(when.visibility_of_element_located((By.ID, "confirm")))
    click(driver, "confirm-ok")
    wait(driver).until(when.invisibility_of_element_located((By.ID, "confirm")))


def click(driver, element_id):
    """Clicks an element, finding it again if the page redrew it meanwhile."""
    wait(driver).until(lambda d: d.find_element(By.ID, element_id).click() or True)


def refused_text(text):
    """The text when it tells of a refusal, else None (a wait goes on)."""
    return text if "refused" in text else None


def status_text(driver):
    return driver.find_element(By.ID, "domain-status").text.strip()


def auditor_reads(driver):
    driver.get(BASE + "/console/")
    wait(driver).until(when.visibility_of_element_located((By.ID, "sign-in-form")))
    axe(driver, "sign-in")
    shoot(driver, "01-sign-in")
    # A wrong token is refused with the API's own message.
    sign_in_field = driver.find_element(By.ID, "token")
    sign_in_field.send_keys("not-a-token", Keys.ENTER)
    error = wait(driver).until(when.visibility_of_element_located((By.ID, "sign-in-error")))
    wait(driver).until(lambda d: "bearer token" in error.text)
    check("missing or invalid bearer token" in error.text, "a wrong token is refused with the API's error", error.text)

    sign_in(driver, AUDITOR_TOKEN)
    check("auditor" in driver.find_element(By.ID, "role").text, "the auditor is told their role")
    wait(driver).until(when.presence_of_element_located((By.ID, "domain-table")))
    rows = driver.find_elements(By.CSS_SELECTOR, "#domain-table tbody tr")
    check(len(rows) >= 2, "the list shows the registered domains", str(len(rows)))
    check(not driver.find_element(By.CSS_SELECTOR, '[data-section="register"]').is_displayed(),
          "an auditor is not offered registration")
    axe(driver, "domain list")
    shoot(driver, "02-domains-auditor")

    # Filtering by status and searching by name go through the API's own filters.
    Select(driver.find_element(By.ID, "filter-status")).select_by_value("active")
    wait(driver).until(lambda d: "status=active" in d.current_url)
    wait(driver).until(lambda d: all(
        "active" in cell.text for cell in d.find_elements(By.CSS_SELECTOR, "#domain-table tbody td[data-label=Status]")
    ))
    active_rows = driver.find_elements(By.CSS_SELECTOR, "#domain-table tbody tr")
    check([row.get_attribute("data-domain-id") for row in active_rows] == [ACTIVE_DOMAIN_ID],
          "filtering by status shows only the active domain")

    open_domain_from_list(driver, ACTIVE_DOMAIN_ID)
    verdict = wait(driver).until(when.presence_of_element_located((By.ID, "chain-verdict")))
    check(verdict.get_attribute("data-verified") == "true",
          "the timeline's hash chain verifies in the browser", verdict.text)
    checkpoint = driver.find_element(By.ID, "checkpoint-verdict")
    check(checkpoint.get_attribute("data-verified") == "true",
          "the latest signed checkpoint's signature verifies in the browser", checkpoint.text)
    _, who = api("GET", "/whoami", AUDITOR_TOKEN)
    check(driver.find_element(By.ID, "checkpoint-key").text == who["audit_public_key"],
          "the checkpoint is checked against the service's own key", checkpoint.text)
    # A key the auditor was given that did not sign it: not verified; cleared, verified again.
    use_auditor_key(driver, STRANGER_KEY)
    verdict = checkpoint_verdict(driver)
    check(verdict.get_attribute("data-verified") == "false",
          "a checkpoint is not verified under a pasted key that did not sign it", verdict.text)
    use_auditor_key(driver, "")
    verdict = checkpoint_verdict(driver)
    check(verdict.get_attribute("data-verified") == "true",
          "with the pasted key cleared, the service's own key is used again", verdict.text)
    events = driver.find_elements(By.CSS_SELECTOR, "#timeline li")
    check(len(events) >= 5, "the timeline lists the domain's events", str(len(events)))
    timeline = driver.find_element(By.ID, "timeline").text
    check("by admin via http (POST /domains)" in timeline, "the timeline says who caused each event", timeline[:500])
    check(driver.find_elements(By.CSS_SELECTOR, "#certificate-table tbody tr"),
          "the domain page lists its certificates")
    health = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#health-table tbody tr")]
    check(any("CAA" in row and "console-active.example.test" in row and "no CAA records" in row for row in health),
          "the domain page shows its health, check by check and name by name", str(health))
    problems = driver.find_elements(By.ID, "health-problems")
    check(problems and problems[0].text == "No problems found.", "a healthy domain is said to have no problems",
          problems[0].text if problems else "no problems shown")
    check(not driver.find_elements(By.CSS_SELECTOR, "button[id^=action-]"), "an auditor sees no actions")
    axe(driver, "domain")
    shoot(driver, "03-domain-auditor")

    driver.find_element(By.CSS_SELECTOR, '[data-section="overview"]').click()
    wait(driver).until(when.presence_of_element_located((By.ID, "status-figures")))
    active_figure = driver.find_element(By.XPATH, '//table[@id="status-figures"]//tr[th="active"]/td').text
    check(active_figure == "1", "the overview counts the active domain", active_figure)
    due = driver.find_element(By.ID, "renewals-due-count").text
    check(due == "0", "a certificate issued a minute ago is not a renewal due", due)
    check(len(driver.find_elements(By.CSS_SELECTOR, "svg.chart")) == 3, "the overview draws its three charts")
    axe(driver, "overview")
    shoot(driver, "04-overview")
    no_token_left(driver, AUDITOR_TOKEN, "auditor")

    driver.find_element(By.ID, "sign-out").click()
    wait(driver).until(when.visibility_of_element_located((By.ID, "sign-in-form")))


def admin_registers_and_issues(driver):
    sign_in(driver, ADMIN_TOKEN)
    # Marks this document: if it is still marked at the end, the page was never reloaded.
    driver.execute_script("window.__notReloaded = true;")
    driver.find_element(By.CSS_SELECTOR, '[data-section="register"]').click()
    name_field = wait(driver).until(when.element_to_be_clickable((By.ID, "register-name")))
    axe(driver, "register")
    name_field.send_keys(NEW_DOMAIN)
    driver.find_element(By.ID, "register-alt-names").send_keys(f"www.{NEW_DOMAIN}")
    shoot(driver, "05-register")
    click(driver, "register-submit")
    confirm(driver)
    wait(driver).until(lambda d: status_text(d) == "pending")
    check(True, "a domain registered through the console opens as pending")

    # Its ownership record, as the page shows it (and would copy it), published by "the owner".
    records = wait(driver).until(lambda d: shown_records(d) or False)
    for name, value in records:
        publish_txt(name, value)
    click(driver, "action-verify")
    confirm(driver)
    wait(driver).until(lambda d: status_text(d) == "verified")
    check(True, "verifying through the console makes it verified")

    click(driver, "action-issue")
    confirm(driver)
    wait(driver).until(lambda d: status_text(d) == "certificate pending")
    records = wait(driver).until(lambda d: shown_records(d) if len(shown_records(d)) >= 2 else False)
    check(len(records) == 2, "the order's two challenge records are shown to copy", str(records))
    shoot(driver, "06-domain-records-to-publish")
    for name, value in records:
        publish_txt(name, value)
    # No reload, no click: the feed brings the change.
    try:
        wait(driver, LONG).until(lambda d: status_text(d) == "active")
    except TimeoutException:
        raise AssertionError(f"NOT TRUE: the domain turns active without a reload (status {status_text(driver)!r})")
    check(driver.execute_script("return window.__notReloaded === true"),
          "the domain turns active without reloading the page")
    check(f"{NEW_DOMAIN} is now active" in driver.find_element(By.ID, "live-state").text,
          "the change is announced to screen readers")
    shoot(driver, "07-domain-active")
    no_token_left(driver, ADMIN_TOKEN, "admin")


def use_auditor_key(driver, key):
    """Pastes a checkpoint key into the domain page's field (empty: clears it) and applies it."""
    before = driver.find_element(By.ID, "checkpoint-verdict")
    field = wait(driver).until(when.element_to_be_clickable((By.ID, "auditor-key")))
    field.clear()
    if key:
        field.send_keys(key)
    click(driver, "auditor-key-use")
    # The page redraws the timeline with the new key.
    wait(driver).until(when.staleness_of(before))


def checkpoint_verdict(driver):
    return wait(driver).until(when.presence_of_element_located((By.ID, "checkpoint-verdict")))


def a_foreign_checkpoint_is_not_verified(driver):
    """The latest checkpoint row was replaced by one signed with another key: whoever can write
    the database could do it, with the row naming its own key. It must not show as verified."""
    driver.get(BASE + "/console/")
    sign_in(driver, AUDITOR_TOKEN)
    driver.execute_script(f"location.hash = '#/domain/{ACTIVE_DOMAIN_ID}'")
    verdict = checkpoint_verdict(driver)
    code, latest = api("GET", "/audit/checkpoints?limit=1", AUDITOR_TOKEN)
    check(code == 200 and latest["items"][0]["public_key"] == FOREIGN_KEY,
          "the latest checkpoint names the foreign key", str(latest))
    check(verdict.get_attribute("data-verified") == "false",
          "a checkpoint signed by a foreign key is NOT verified", verdict.text)
    check("NOT verified" in verdict.text and "another key" in verdict.text,
          "the page says it is signed by another key than the service's", verdict.text)
    shoot(driver, "11-foreign-checkpoint")
    # The key an auditor was given decides: the foreign key verifies it, the service's does not.
    use_auditor_key(driver, FOREIGN_KEY)
    verdict = checkpoint_verdict(driver)
    check(verdict.get_attribute("data-verified") == "true",
          "under the pasted key (here the foreign one) the checkpoint is checked against that key", verdict.text)
    _, who = api("GET", "/whoami", AUDITOR_TOKEN)
    use_auditor_key(driver, who["audit_public_key"])
    verdict = checkpoint_verdict(driver)
    check(verdict.get_attribute("data-verified") == "false",
          "under the service's key pasted by hand the foreign checkpoint is not verified", verdict.text)
    no_token_left(driver, AUDITOR_TOKEN, "foreign checkpoint")
    check(who["audit_public_key"] not in driver.execute_script(
        "return JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])"),
        "the pasted key is stored nowhere in the browser")


def retry_puts_a_failed_domain_back_to_verified(driver):
    """Retry places no order: it puts the domain back to `verified`, and says so."""
    driver.execute_script(f"location.hash = '#/domain/{FAILED_DOMAIN_ID}'")
    wait(driver).until(lambda d: status_text(d) == "failed")
    check(not driver.find_elements(By.ID, "action-issue"), "a failed domain is not offered issuing")
    click(driver, "action-retry")
    confirm(driver)
    # The retry's event redraws the page: the status first, then the outcome read inside a wait
    # (an element read outside one may have been replaced by its redrawn copy).
    wait(driver).until(lambda d: status_text(d) == "verified")
    text = wait(driver).until(lambda d: d.find_element(By.ID, "action-result").text.strip())
    check("placed" not in text.replace("No order is placed", "") and "verified" in text,
          "the console says what retry did: back to verified, no order placed", text)
    code, domain = api("GET", f"/domains/{FAILED_DOMAIN_ID}", ADMIN_TOKEN)
    check(domain["status"] == "verified" and not domain.get("challenges"),
          "the API agrees: verified, no order open", str(domain))
    offered = wait(driver).until(lambda d: d.find_elements(By.ID, "action-issue"))
    check(offered, "a verified domain is offered issuing")


def a_refused_action_shows_the_api_error(driver):
    code, expected = api("POST", f"/domains/{PENDING_DOMAIN_ID}/verify", ADMIN_TOKEN)
    check(code in (400, 409, 422) and "error" in expected, "the API refuses to verify without the record", str(expected))
    driver.execute_script(f"location.hash = '#/domain/{PENDING_DOMAIN_ID}'")
    wait(driver).until(lambda d: status_text(d) == "pending")
    check(not driver.find_elements(By.ID, "action-issue"),
          "a pending domain is not offered issuing (the API accepts it only once verified)")
    click(driver, "action-verify")
    confirm(driver)
    result = wait(driver).until(when.visibility_of_element_located((By.ID, "action-result")))
    text = wait(driver).until(lambda d: d.find_element(By.ID, "action-result").text.strip())
    check(expected["error"] in text and f"({code})" in text, "a refused action shows the API's error as it is", text)
    check(result.get_attribute("role") == "alert", "the refusal is announced as an alert")
    check(status_text(driver) == "pending", "the refused action changed nothing")
    shoot(driver, "08-refused-action")

    # Cancelling a confirmation does nothing at all.
    click(driver, "action-remove")
    wait(driver).until(when.visibility_of_element_located((By.ID, "confirm")))
    click(driver, "confirm-cancel")
    code, still = api("GET", f"/domains/{PENDING_DOMAIN_ID}", ADMIN_TOKEN)
    check(code == 200, "a cancelled removal removes nothing", str(still))

    # Further names are edited in the confirmation itself; a name the API refuses is shown with
    # its error and changes nothing.
    www = "www.console-pending.example.test"
    edit_names(driver, www)
    wait(driver).until(lambda d: "Further names saved" in d.find_element(By.ID, "action-result").text)
    code, edited = api("GET", f"/domains/{PENDING_DOMAIN_ID}", ADMIN_TOKEN)
    check(edited["alt_names"] == [www], "further names edited in the console are the domain's", str(edited))
    code, expected = api("PUT", f"/domains/{PENDING_DOMAIN_ID}/alt_names", ADMIN_TOKEN,
                         {"alt_names": ["elsewhere.example.org"]})
    check(code == 400, "the API refuses a further name outside the domain", str(expected))
    edit_names(driver, "elsewhere.example.org")
    text = wait(driver).until(lambda d: refused_text(d.find_element(By.ID, "action-result").text))
    check(expected["error"] in text, "a refused name edit shows the API's error as it is", text)
    code, unchanged = api("GET", f"/domains/{PENDING_DOMAIN_ID}", ADMIN_TOKEN)
    check(unchanged["alt_names"] == [www], "the refused edit changed nothing", str(unchanged))


def edit_names(driver, names):
    click(driver, "action-names")
    area = wait(driver).until(when.element_to_be_clickable((By.ID, "edit-alt-names")))
    area.clear()
    area.send_keys(names)
    click(driver, "confirm-ok")
    wait(driver).until(when.invisibility_of_element_located((By.ID, "confirm")))


def readable_at_phone_width(driver):
    driver.set_window_size(390, 844)
    driver.execute_script("location.hash = '#/domains'")
    wait(driver).until(when.presence_of_element_located((By.ID, "domain-table")))
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 1, "the domain list fits a phone's width", f"{overflow}px too wide")
    shoot(driver, "09-domains-phone")
    driver.execute_script(f"location.hash = '#/domain/{ACTIVE_DOMAIN_ID}'")
    wait(driver).until(when.presence_of_element_located((By.ID, "chain-verdict")))
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 1, "a domain page fits a phone's width", f"{overflow}px too wide")
    shoot(driver, "10-domain-phone")
    driver.set_window_size(1280, 1000)


def keyboard_only(driver):
    """The skip link comes first, Tab then walks the sections in reading order, and the list's
    filter and rows are reached and opened with the keyboard alone."""
    driver.execute_script("location.hash = '#/domains'")
    wait(driver).until(when.presence_of_element_located((By.ID, "domain-table")))
    first = driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]'))"
        ".find((e) => e.tabIndex >= 0 && !e.closest('[hidden]') && !e.disabled).className"
    )
    check(first == "skip-link", "the skip link is the first thing Tab reaches", first)
    driver.execute_script("document.querySelector('.skip-link').focus()")
    keys = ActionChains(driver)
    visited = []
    # The sections (Domains, Overview, Register a domain, Tokens), Sign out, the two filters.
    for _ in range(7):
        keys.send_keys(Keys.TAB).perform()
        active = driver.switch_to.active_element
        visited.append(active.get_attribute("id") or active.text)
    check(visited[:3] == ["Domains", "Overview", "Register a domain"],
          "Tab then walks the sections in reading order", str(visited))
    check("filter-status" in visited and "filter-name" in visited, "then the list's filters", str(visited))
    # Enter on a focused row link opens the domain.
    link = driver.find_element(By.CSS_SELECTOR, f'tr[data-domain-id="{ACTIVE_DOMAIN_ID}"] a')
    driver.execute_script("arguments[0].focus()", link)
    keys.send_keys(Keys.ENTER).perform()
    wait(driver).until(when.presence_of_element_located((By.ID, "chain-verdict")))
    check(True, "Enter on a domain's link opens its page")


def nothing_outlives_the_tab(driver):
    """Closing the tab signs out: a new tab of the same browser finds no token and must sign in."""
    console_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    fresh = driver.current_window_handle
    driver.switch_to.window(console_tab)
    driver.close()
    driver.switch_to.window(fresh)
    driver.get(BASE + "/console/#/domains")
    wait(driver).until(when.visibility_of_element_located((By.ID, "sign-in-form")))
    check(not driver.find_element(By.ID, "sections").is_displayed(), "a new tab after the console's tab closed is signed out")
    no_token_left(driver, ADMIN_TOKEN, "after the tab closed")
    no_token_left(driver, AUDITOR_TOKEN, "after the tab closed")


def tokens_page_makes_a_tenant_token_whose_sign_in_shows_only_its_domains(driver):
    """The admin's tokens page makes a tenant token, showing its secret once; signed in with
    it, the console lists that tenant's domain only; the page then revokes it."""
    name = "tenant-only.example.test"
    status, body = api("POST", "/domains", ADMIN_TOKEN, {"domain_name": name, "tenant": "acct_console"})
    check(status == 201, "a domain of tenant acct_console is registered", str(body))
    driver.get(BASE + "/console/")
    sign_in(driver, ADMIN_TOKEN)
    click_section(driver, "tokens")
    wait(driver).until(when.visibility_of_element_located((By.ID, "token-form")))
    driver.find_element(By.ID, "token-name").send_keys("console tenant")
    Select(driver.find_element(By.ID, "token-role")).select_by_value("tenant")
    driver.find_element(By.ID, "token-tenant").send_keys("acct_console")
    click(driver, "token-create")
    secret = wait(driver).until(when.visibility_of_element_located((By.ID, "token-secret"))).text.strip()
    check(secret.startswith("dnsh_"), "the new token's secret is shown", secret)
    axe(driver, "tokens")
    shoot(driver, "11-tokens")
    _, tokens = api("GET", "/tokens", ADMIN_TOKEN)
    made = [token for token in tokens["items"] if token["name"] == "console tenant"]
    check(len(made) == 1 and made[0]["tenant"] == "acct_console", "the token is made for its tenant", str(made))
    token_id = made[0]["id"]
    row = driver.find_element(By.CSS_SELECTOR, f'tr[data-token-id="{token_id}"]')
    check("acct_console" in row.text and "active" in row.text, "the list shows it, active, with its tenant", row.text)
    click_section(driver, "domains")
    click_section(driver, "tokens")
    wait(driver).until(when.visibility_of_element_located((By.ID, "token-table")))
    check(secret not in driver.find_element(By.TAG_NAME, "body").text, "the secret is shown once only")

    click(driver, "sign-out")
    sign_in(driver, secret)
    check("tenant acct_console" in driver.find_element(By.ID, "role").text, "the tenant is told its tenant")
    wait(driver).until(when.presence_of_element_located((By.ID, "domain-table")))
    rows = driver.find_elements(By.CSS_SELECTOR, "#domain-table tbody tr")
    check([r.text.split()[0] for r in rows] == [name], "a tenant's console lists its own domain only", str([r.text for r in rows]))
    for section in ("overview", "tokens", "register"):
        link = driver.find_element(By.CSS_SELECTOR, f'[data-section="{section}"]')
        check(not link.is_displayed(), f"a tenant is not offered the {section} page")
    shoot(driver, "12-tenant-domains")

    click(driver, "sign-out")
    sign_in(driver, ADMIN_TOKEN)
    click_section(driver, "tokens")
    click(driver, f"revoke-{token_id}")
    confirm(driver)
    wait(driver).until(lambda d: "revoked" in d.find_element(By.CSS_SELECTOR, f'tr[data-token-id="{token_id}"] .token-status').text)
    check(api("GET", "/whoami", secret)[0] == 401, "the revoked token is refused")
    no_token_left(driver, secret, "after a tenant's session")


def click_section(driver, section):
    """Follows a link of the top bar."""
    wait(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, f'[data-section="{section}"]').click() or True)
    wait(driver).until(lambda d: f"#/{section}" in d.current_url)


def main():
    os.makedirs(SCREENSHOTS, exist_ok=True)
    driver = browser()
    try:
        if PHASE == "foreign-checkpoint":
            a_foreign_checkpoint_is_not_verified(driver)
        else:
            auditor_reads(driver)
            admin_registers_and_issues(driver)
            a_refused_action_shows_the_api_error(driver)
            retry_puts_a_failed_domain_back_to_verified(driver)
            tokens_page_makes_a_tenant_token_whose_sign_in_shows_only_its_domains(driver)
            readable_at_phone_width(driver)
            keyboard_only(driver)
            nothing_outlives_the_tab(driver)
    except Exception:
        try:
            shoot(driver, "failure")
            print(driver.find_element(By.TAG_NAME, "body").text[:3000], file=sys.stderr)
            for entry in driver.get_log("browser"):
                print(f"browser log: {entry}", file=sys.stderr)
        except Exception as error:  # the browser itself may be gone
            print(f"(no failure screenshot: {error})", file=sys.stderr)
        raise
    finally:
        driver.quit()
    print("all console checks passed", flush=True)


if __name__ == "__main__":
    main()
