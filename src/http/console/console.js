// The dns-handling console: a page of the service's own API, no framework, no build step.
//
// The token lives in `session.token` and nowhere else: not in a cookie, not in storage, not in
// a URL (the location's hash holds only the page and its filters). Every request carries it in
// the Authorization header, which a page of another site cannot add, so no cross-site request
// can act with it. Everything the API answers is put into the page as text, never as HTML.
'use strict';

(() => {
  const STATUSES = ['pending', 'verified', 'certificate_pending', 'active', 'failed', 'expired', 'moved'];
  const PAGE_SIZE = 50;
  const GENESIS = '0'.repeat(64);
  const AGGREGATE_TYPE = 'CustomDomain';

  /** The signed-in session: the token, the role it gives, the feed being followed, the key the
   *  service itself signs its checkpoints with (from `GET /whoami`, never from a checkpoint row),
   *  and the key an auditor pasted, which then takes its place. */
  const session = { token: null, role: null, tenant: null, feedPosition: 0, follow: null, serviceKey: null, pastedKey: null };
  /** Paging of the domain list: the cursors of the pages before, for the current filters. */
  const listPaging = { filters: null, cursors: [null], page: 0 };
  /** What the page shows now, so that the feed knows what to refresh. */
  let current = { kind: null, id: null, refresh: null };
  let refreshTimer = null;

  const $ = (id) => document.getElementById(id);

  // ---- Building the page ------------------------------------------------------------------

  /** An element with attributes (`on…` functions become listeners) and children (text or nodes). */
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
      else if (name === 'text') element.textContent = value;
      else element.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  /** An SVG element with attributes and children. */
  function svg(tag, attributes, ...children) {
    const element = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, String(value));
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  /** Says `message` to screen readers and shows it in the bar. */
  function announce(message) {
    $('live-state').textContent = message;
  }

  function formatTime(text) {
    if (!text) return '—';
    const date = new Date(text);
    return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  }

  function relative(text) {
    if (!text) return '';
    const days = (new Date(text) - Date.now()) / 86400000;
    if (Math.abs(days) < 1) {
      const hours = Math.round(days * 24);
      return hours >= 0 ? `in ${hours} h` : `${-hours} h ago`;
    }
    const whole = Math.round(days);
    return whole >= 0 ? `in ${whole} days` : `${-whole} days ago`;
  }

  function statusBadge(status) {
    return h('span', { class: `status status-${status}`, text: status.replace('_', ' ') });
  }

  // ---- Talking to the API -----------------------------------------------------------------

  /** An answer of the API that is not a success, with its `error` as the service wrote it. */
  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function headers(extra) {
    const all = { Accept: 'application/json', ...extra };
    if (session.token) all.Authorization = `Bearer ${session.token}`;
    return all;
  }

  /** Calls the API; answers the parsed body, or throws an `ApiFailure` with its `error`. */
  async function api(method, path, body) {
    const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }), cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    const text = await response.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (_) { parsed = null; }
    if (!response.ok) {
      const message = parsed && typeof parsed.error === 'string' ? parsed.error : `${response.status} ${response.statusText}`;
      if (response.status === 401 && session.role !== null) signOut('The token was refused: sign in again.');
      throw new ApiFailure(response.status, message);
    }
    return parsed;
  }

  function query(parameters) {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(parameters)) if (value) search.set(name, value);
    const text = search.toString();
    return text ? `?${text}` : '';
  }

  // ---- Signing in and out ------------------------------------------------------------------

  async function signIn(token) {
    session.token = token;
    try {
      const who = await api('GET', '/whoami');
      session.role = who.role;
      session.tenant = who.tenant || null;
      session.feedPosition = who.feed_position;
      session.serviceKey = who.audit_public_key || null;
    } catch (failure) {
      session.token = null;
      throw failure;
    }
    $('sign-in').hidden = true;
    $('view').hidden = false;
    $('sections').hidden = false;
    $('sign-out').hidden = session.token === '';
    for (const link of document.querySelectorAll('[data-admin-only]')) link.hidden = session.role !== 'admin';
    // A tenant's token sees its own domains and nothing of the service as a whole.
    for (const link of document.querySelectorAll('[data-not-tenant]')) link.hidden = session.role === 'tenant';
    $('role').textContent = session.tenant ? `Signed in: tenant ${session.tenant}` : `Signed in: ${session.role}`;
    startFollowing();
    if (!location.hash || location.hash === '#') location.hash = '#/domains';
    else route();
  }

  function signOut(message) {
    session.token = null;
    session.role = null;
    session.tenant = null;
    session.serviceKey = null;
    session.pastedKey = null;
    if (session.follow) session.follow.abort();
    session.follow = null;
    $('view').replaceChildren();
    $('view').hidden = true;
    $('sections').hidden = true;
    $('sign-out').hidden = true;
    $('role').textContent = '';
    $('feed-state').textContent = '';
    announce('');
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = message || '';
    $('token').focus();
  }

  // ---- Following the feed ------------------------------------------------------------------

  /** Follows `GET /events?follow=true` from the position of the sign-in, reconnecting after a
   *  break from the last event seen, so that every status change shows without a reload. */
  async function startFollowing() {
    const controller = new AbortController();
    session.follow = controller;
    while (!controller.signal.aborted) {
      try {
        const response = await fetch(`/events?follow=true&after=${session.feedPosition}`, {
          headers: headers({ Accept: 'application/x-ndjson' }), signal: controller.signal, cache: 'no-store', credentials: 'omit',
        });
        if (!response.ok) throw new Error(`feed answered ${response.status}`);
        $('feed-state').dataset.state = 'live';
        $('feed-state').textContent = '● live';
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let newline;
          while ((newline = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, newline).trim();
            buffer = buffer.slice(newline + 1);
            if (line) onFeedEvent(JSON.parse(line));
          }
        }
      } catch (_) {
        if (controller.signal.aborted) return;
      }
      $('feed-state').dataset.state = 'reconnecting';
      $('feed-state').textContent = '○ reconnecting';
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  function onFeedEvent(event) {
    session.feedPosition = Math.max(session.feedPosition, event.position);
    const concerned = current.kind === 'list' || current.kind === 'overview' || (current.kind === 'domain' && current.id === event.aggregate_id);
    if (!concerned || !current.refresh || refreshTimer !== null) return;
    // At most one redraw per interval however busy the feed is (a burst of events is one
    // redraw, a steady stream does not starve it).
    refreshTimer = setTimeout(refreshNow, current.kind === 'overview' ? 1500 : 250);
  }

  /** Draws the current page again in place, keeping the keyboard focus where it was; waits
   *  while a confirmation is open or the operator is typing in a field. */
  async function refreshNow() {
    const typing = document.activeElement && ['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement.tagName);
    if ($('confirm').open || typing) {
      refreshTimer = setTimeout(refreshNow, 500);
      return;
    }
    refreshTimer = null;
    const focused = document.activeElement && document.activeElement.id;
    const scroll = window.scrollY;
    if (current.refresh) await current.refresh();
    if (focused && $(focused)) $(focused).focus({ preventScroll: true });
    window.scrollTo(0, scroll);
  }

  // ---- Routing -----------------------------------------------------------------------------

  function parseHash() {
    const [path, search] = location.hash.replace(/^#/, '').split('?');
    return { parts: path.split('/').filter(Boolean), parameters: new URLSearchParams(search || '') };
  }

  async function route() {
    if (session.role === null) return;
    const { parts, parameters } = parseHash();
    const section = parts[0] || 'domains';
    for (const link of document.querySelectorAll('#sections a')) {
      if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    clearTimeout(refreshTimer);
    refreshTimer = null;
    if (section === 'domain' && parts[1]) await showDomain(decodeURIComponent(parts[1]));
    else if (section === 'overview') await showOverview();
    else if (section === 'register') showRegister();
    else if (pages[section]) {
      current = { kind: section, id: null, refresh: null };
      await pages[section](parameters);
    } else await showList(parameters);
    $('main').focus({ preventScroll: true });
  }

  function setView(title, ...children) {
    document.title = `${title} · dns-handling console`;
    $('view').replaceChildren(...children.filter((child) => child !== null && child !== undefined));
  }

  // ---- The domain list ---------------------------------------------------------------------

  /** What a domain is waiting for, in a few words. */
  function waitingFor(domain) {
    const renewal = domain.renewal;
    switch (domain.status) {
      case 'pending':
        return `ownership proof: TXT at ${domain.verification_record ? domain.verification_record.name : 'its record'}`;
      case 'verified':
        return 'a certificate request';
      case 'certificate_pending':
        if (domain.validation === 'delegated') return 'the CA (records published by the service)';
        return `${domain.challenges.length || 1} challenge record(s) to be published`;
      case 'failed':
        return `a retry (${domain.failure_reason ? domain.failure_reason.code : 'failed'})`;
      case 'expired':
        return 'a renewal (the certificate expired)';
      case 'moved':
        return 'its names to route to the platform again (no renewal meanwhile)';
      case 'active':
        if (renewal && renewal.in_progress) return renewal.challenges.length ? 'renewal: challenge records' : 'renewal: the CA';
        if (renewal && renewal.next_attempt_at) return `renewal retry ${relative(renewal.next_attempt_at)}`;
        if (renewal && renewal.due_at) return `renewal ${relative(renewal.due_at)}`;
        return 'renewal scheduling';
      default:
        return '';
    }
  }

  async function showList(parameters) {
    const filters = { status: parameters.get('status') || '', name: parameters.get('name') || '' };
    const key = JSON.stringify(filters);
    if (listPaging.filters !== key) {
      listPaging.filters = key;
      listPaging.cursors = [null];
      listPaging.page = 0;
    }
    current = { kind: 'list', id: null, refresh: () => drawList(filters) };
    await drawList(filters);
  }

  async function drawList(filters) {
    const status = h('select', { id: 'filter-status', name: 'status' },
      h('option', { value: '', text: 'Every status' }),
      STATUSES.map((name) => h('option', { value: name, selected: name === filters.status, text: name.replace('_', ' ') })));
    const name = h('input', { id: 'filter-name', name: 'name', type: 'search', value: filters.name, placeholder: 'shop.example.com', autocomplete: 'off' });
    const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter domains', onsubmit: (event) => {
      event.preventDefault();
      location.hash = `#/domains${query({ status: status.value, name: name.value.trim() })}`;
    } },
    h('div', {}, h('label', { for: 'filter-status', text: 'Status' }), status),
    h('div', {}, h('label', { for: 'filter-name', text: 'Name contains' }), name),
    h('div', {}, h('button', { type: 'submit', id: 'filter-apply', text: 'Filter' })));
    status.addEventListener('change', () => form.requestSubmit());

    let page;
    let problem = null;
    try {
      page = await api('GET', `/domains${query({ status: filters.status, name: filters.name, limit: PAGE_SIZE, cursor: listPaging.cursors[listPaging.page] })}`);
    } catch (failure) {
      problem = failure;
    }
    if (problem) {
      setView('Domains', h('h1', { text: 'Domains' }), form, h('p', { class: 'error', role: 'alert', id: 'list-error', text: problem.message }));
      return;
    }
    const rows = page.items.map((domain) => h('tr', { 'data-domain-id': domain.id },
      h('td', { 'data-label': 'Name' },
        h('a', { href: `#/domain/${encodeURIComponent(domain.id)}`, text: domain.domain_name }),
        domain.alt_names.length ? h('span', { class: 'hint', text: ` +${domain.alt_names.length} name(s)` }) : null),
      h('td', { 'data-label': 'Status' }, statusBadge(domain.status)),
      h('td', { 'data-label': 'Expires' }, domain.certificate ? `${formatTime(domain.certificate.not_after)} (${relative(domain.certificate.not_after)})` : '—'),
      h('td', { 'data-label': 'Waiting for' }, waitingFor(domain))));
    const table = h('table', { class: 'stack', id: 'domain-table' },
      h('caption', { class: 'visually-hidden', text: `Domains, page ${listPaging.page + 1}` }),
      h('thead', {}, h('tr', {}, ['Name', 'Status', 'Certificate expires', 'Waiting for'].map((title) => h('th', { scope: 'col', text: title })))),
      h('tbody', {}, rows));
    const pager = h('div', { class: 'pager' },
      h('button', { type: 'button', id: 'page-previous', disabled: listPaging.page === 0, text: 'Previous page', onclick: async () => {
        listPaging.page -= 1;
        await drawList(filters);
        $('page-previous').focus();
      } }),
      h('span', { id: 'page-number', text: `Page ${listPaging.page + 1}` }),
      h('button', { type: 'button', id: 'page-next', disabled: !page.next_cursor, text: 'Next page', onclick: async () => {
        listPaging.cursors[listPaging.page + 1] = page.next_cursor;
        listPaging.page += 1;
        await drawList(filters);
        $('page-next').focus();
      } }));
    const empty = page.items.length ? null : h('p', { class: 'notice', id: 'list-empty', text: 'No domain matches.' });
    setView('Domains', h('h1', { text: 'Domains' }), form, empty || table, pager);
    // For bench/console.rs: when the list was first on screen after the page loaded.
    if (!performance.getEntriesByName('domains-rendered').length) performance.mark('domains-rendered');
  }

  // ---- One domain --------------------------------------------------------------------------

  async function showDomain(id) {
    // The outcome of the last action stays on the page through the feed's redraws, until the
    // next action or another page.
    current = { kind: 'domain', id, result: null, refresh: () => drawDomain(id, current.result) };
    await drawDomain(id, null);
  }

  /** The domain's page; `result` is the outcome of the last action, shown at the top. */
  async function drawDomain(id, result) {
    const path = `/domains/${encodeURIComponent(id)}`;
    const [domain, history, events, checkpoints] = await Promise.allSettled([
      api('GET', path),
      api('GET', `${path}/certificates`),
      api('GET', `${path}/events`),
      api('GET', '/audit/checkpoints?limit=1'),
    ]);
    if (domain.status === 'rejected') {
      setView('Domain', h('h1', { text: 'Domain' }), h('p', { class: 'error', role: 'alert', id: 'domain-error', text: domain.reason.message }),
        h('p', {}, h('a', { href: '#/domains', text: 'Back to the domains' })));
      return;
    }
    const body = domain.value;
    if (current.kind === 'domain' && current.id === id && current.lastStatus && current.lastStatus !== body.status) {
      announce(`${body.domain_name} is now ${body.status.replace('_', ' ')}`);
    }
    current.lastStatus = body.status;
    const resultRegion = h('div', { id: 'action-result', role: result && !result.ok ? 'alert' : 'status' });
    if (result) {
      resultRegion.className = result.ok ? 'notice good' : 'notice bad';
      resultRegion.textContent = result.message;
    }
    const sections = [
      h('h1', { id: 'domain-title' }, body.domain_name, ' ', h('span', { id: 'domain-status' }, statusBadge(body.status))),
      resultRegion,
      factsOf(body),
      session.role === 'admin' ? actionsFor(body) : null,
      recordsSection(body),
      certificatesSection(body, history.status === 'fulfilled' ? history.value : null),
      renewalSection(body),
      healthSection(body),
      await timelineSection(body, events, checkpoints),
    ];
    setView(body.domain_name, ...sections);
  }

  function factsOf(domain) {
    const facts = [
      ['Id', h('code', { text: domain.id })],
      ['Names', [domain.domain_name, ...domain.alt_names].join(', ')],
      ['Waiting for', h('span', { id: 'waiting-for', text: waitingFor(domain) })],
      ['Registered', formatTime(domain.created_at)],
      ['Ownership proven', formatTime(domain.verified_at)],
      ['Certificate expires', domain.certificate ? `${formatTime(domain.certificate.not_after)} (${relative(domain.certificate.not_after)})` : '—'],
    ];
    if (domain.failure_reason) facts.push(['Last failure', `${domain.failure_reason.code}: ${domain.failure_reason.detail}`]);
    if (domain.delegation_problem) facts.push(['Delegation', domain.delegation_problem]);
    return h('dl', { class: 'facts' }, facts.map(([term, value]) => [h('dt', { text: term }), h('dd', {}, value)]));
  }

  /** A record to publish, with a button that copies its value. */
  function record(kind, name, value, index) {
    const copy = (text, what) => h('button', { type: 'button', id: `copy-${what}-${index}`, 'aria-label': `Copy the ${what} of ${name}`, text: `Copy ${what}`, onclick: async () => {
      await copyText(text);
      announce(`Copied the ${what} of ${name}`);
    } });
    return h('li', {}, h('div', { class: 'record', 'data-record-name': name, 'data-record-value': value },
      h('span', { class: 'label', text: 'Type' }), h('span', { text: kind }), h('span'),
      h('span', { class: 'label', text: 'Name' }), h('code', { text: name }), copy(name, 'name'),
      h('span', { class: 'label', text: 'Value' }), h('code', { class: 'record-value', text: value }), copy(value, 'value')));
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const area = h('textarea', { class: 'visually-hidden', 'aria-hidden': 'true' });
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
  }

  function recordsSection(domain) {
    const items = [];
    let index = 0;
    if (domain.status === 'pending' && domain.verification_record) {
      const proof = domain.verification_record;
      items.push(record(proof.type, proof.name, proof.value, index++));
    }
    const challenges = [...(domain.challenges || []), ...((domain.renewal && domain.renewal.challenges) || [])];
    for (const challenge of challenges) {
      if (challenge.delegated_to) continue;
      items.push(record('TXT', challenge.challenge_domain, challenge.expected_txt_value, index++));
    }
    const delegations = (domain.delegation_records || []).map((delegation) => record(delegation.type, delegation.name, delegation.value, index++));
    if (!items.length && !delegations.length) return null;
    return h('section', { 'aria-labelledby': 'records-title', id: 'records' },
      h('h2', { id: 'records-title', text: 'Records to publish' }),
      items.length ? h('ul', { class: 'records', id: 'records-now' }, items) : h('p', { class: 'hint', text: 'Nothing to publish now.' }),
      delegations.length ? [
        h('p', { class: 'hint', text: 'Or delegate once: with these CNAME records in place the service publishes every challenge itself, renewals included.' }),
        h('ul', { class: 'records', id: 'records-delegation' }, delegations)] : null);
  }

  function certificatesSection(domain, history) {
    const items = history ? history.items || history : [];
    if (!items.length) return h('section', { 'aria-labelledby': 'certificates-title' }, h('h2', { id: 'certificates-title', text: 'Certificates' }), h('p', { class: 'hint', text: 'None issued yet.' }));
    const currentId = domain.certificate && domain.certificate.id;
    const rows = items.map((certificate) => h('tr', {},
      h('td', { 'data-label': 'Serial' }, h('code', { text: certificate.serial }), certificate.id === currentId ? h('span', { class: 'hint', text: ' (current)' }) : null),
      h('td', { 'data-label': 'Valid from' }, formatTime(certificate.not_before)),
      h('td', { 'data-label': 'Valid until' }, formatTime(certificate.not_after)),
      h('td', { 'data-label': 'State' }, certificate.revoked_at ? `revoked ${formatTime(certificate.revoked_at)}` : (new Date(certificate.not_after) < new Date() ? 'expired' : 'valid')),
      h('td', { 'data-label': 'Chain' }, h('details', {}, h('summary', { text: 'PEM' }), h('pre', { class: 'pem', text: certificate.chain_pem || '' })))));
    return h('section', { 'aria-labelledby': 'certificates-title' },
      h('h2', { id: 'certificates-title', text: 'Certificates' }),
      h('table', { class: 'stack', id: 'certificate-table' },
        h('thead', {}, h('tr', {}, ['Serial', 'Valid from', 'Valid until', 'State', 'Chain'].map((title) => h('th', { scope: 'col', text: title })))),
        h('tbody', {}, rows)));
  }

  function renewalSection(domain) {
    const renewal = domain.renewal;
    if (!renewal) return null;
    const facts = [
      ['Due', renewal.due_at ? `${formatTime(renewal.due_at)} (${relative(renewal.due_at)})` : 'not decided yet'],
      ['Why then', renewal.reason === 'ari' ? "the CA's suggested window (ARI)" : (renewal.reason || '—')],
      ['In progress', renewal.in_progress ? 'yes' : 'no'],
      ['Failed attempts in a row', String(renewal.attempts)],
    ];
    if (renewal.next_attempt_at) facts.push(['Next attempt', formatTime(renewal.next_attempt_at)]);
    if (renewal.last_failure) facts.push(['Last failure', `${renewal.last_failure.code}: ${renewal.last_failure.detail}`]);
    return h('section', { 'aria-labelledby': 'renewal-title' }, h('h2', { id: 'renewal-title', text: 'Renewal' }),
      h('dl', { class: 'facts' }, facts.map(([term, value]) => [h('dt', { text: term }), h('dd', {}, value)])));
  }

  /** What the checks of the domain's DNS found last (routing, delegation, CAA), name by name. */
  function healthSection(domain) {
    const health = domain.health;
    if (!health) return null;
    const checks = [['Routing', health.routing], ['Delegation', health.delegation], ['CAA', health.caa]];
    const rows = checks.flatMap(([check, names]) => names.map((name) => h('tr', {},
      h('td', { 'data-label': 'Check', text: check }),
      h('td', { 'data-label': 'Name', text: name.name }),
      h('td', { 'data-label': 'Outcome', text: name.outcome }),
      h('td', { 'data-label': 'Expected', text: name.expected }),
      h('td', { 'data-label': 'Found', text: name.found }))));
    const problems = health.problems.length
      ? h('ul', { id: 'health-problems', class: 'notice bad' }, health.problems.map((problem) => h('li', { text: problem })))
      : h('p', { id: 'health-problems', class: 'hint', text: 'No problems found.' });
    return h('section', { 'aria-labelledby': 'health-title' }, h('h2', { id: 'health-title', text: 'Health' }),
      h('p', { class: 'hint', text: `As found by the check of ${formatTime(health.changed_at)}; only a change is recorded.` }),
      problems,
      h('table', { class: 'stack', id: 'health-table' },
        h('thead', {}, h('tr', {}, ['Check', 'Name', 'Outcome', 'Expected', 'Found'].map((title) => h('th', { scope: 'col', text: title })))),
        h('tbody', {}, rows)));
  }

  // ---- Actions -----------------------------------------------------------------------------

  /** The actions the API has for a domain in this status, for admins. */
  function actionsFor(domain) {
    const path = `/domains/${encodeURIComponent(domain.id)}`;
    const name = domain.domain_name;
    const hasCertificate = domain.certificate && !domain.certificate.revoked_at;
    const actions = [
      ['verify', 'Verify ownership', ['pending'], `Check the ownership record of ${name} now?`, () => api('POST', `${path}/verify`), 'Ownership proven.'],
      ['issue', 'Issue certificate', ['verified'], `Ask the CA for a certificate for ${name}? The records to publish appear on this page.`, () => api('POST', `${path}/issue-certificate`), 'Order placed: publish the records below (delegated orders need nothing).'],
      ['retry', 'Retry', ['failed'], `Put ${name} back to verified, so that a certificate can be asked for again? No order is placed yet.`, () => api('POST', `${path}/retry`), 'Back to verified: issue a certificate to place a new order.'],
      ['renew', 'Renew now', ['active', 'expired'], `Renew the certificate of ${name} now, before it is due?`, () => api('POST', `${path}/renew`), 'Renewal order placed.'],
      ['revoke', 'Revoke certificate', hasCertificate ? ['active', 'expired'] : [], `Revoke the current certificate of ${name} at the CA? Clients stop trusting it; this cannot be undone.`, (extra) => api('POST', `${path}/certificate/revoke`, { reason: extra.reason }), 'Certificate revoked.', 'danger'],
      ['names', 'Edit further names', STATUSES, `Set the further names of ${name}: the next order covers them (an open order keeps its own).`, (extra) => api('PUT', `${path}/alt_names`, { alt_names: extra.altNames }), 'Further names saved: the next order covers them.'],
      ['remove', 'Remove domain', STATUSES, `Remove ${name}? Its open order stops, its records leave the zone and its name is free again. Its history stays.`, () => api('DELETE', path), 'Domain removed.', 'danger'],
    ];
    const buttons = actions
      .filter(([, , statuses]) => statuses.includes(domain.status))
      .map(([key, label, , question, call, done, tone]) => h('button', { type: 'button', id: `action-${key}`, class: tone || null, text: label, onclick: async () => {
        const extra = { revoke: revocationReason, names: () => altNamesEditor(domain) }[key];
        const form = extra ? extra() : null;
        const confirmed = await confirmAction(label, question, tone, form);
        if (!confirmed) {
          $(`action-${key}`).focus();
          return;
        }
        let result;
        try {
          await call(form ? readForm(form) : {});
          result = { ok: true, message: done };
        } catch (failure) {
          result = { ok: false, message: `${label} refused (${failure.status || 'network'}): ${failure.message}` };
        }
        if (key === 'remove' && result.ok) {
          location.hash = '#/domains';
          announce(`${name} removed`);
          return;
        }
        current.result = result;
        await drawDomain(domain.id, result);
        $('action-result').focus();
      } }));
    return h('section', { 'aria-labelledby': 'actions-title' }, h('h2', { id: 'actions-title', class: 'visually-hidden', text: 'Actions' }), h('div', { class: 'actions' }, buttons));
  }

  /** What the operator entered in a confirmation's form: the revocation's reason, or the
   *  further names (separated by spaces, commas or lines). */
  function readForm(form) {
    const reason = form.querySelector('select');
    const names = form.querySelector('textarea');
    return {
      reason: reason ? reason.value : undefined,
      altNames: names ? names.value.split(/[\s,]+/).map((value) => value.trim()).filter(Boolean) : undefined,
    };
  }

  function altNamesEditor(domain) {
    const area = h('textarea', { id: 'edit-alt-names', rows: 4, spellcheck: 'false', 'aria-describedby': 'edit-alt-names-hint' });
    area.value = domain.alt_names.join('\n');
    return h('div', {}, h('label', { for: 'edit-alt-names', text: 'Further names' }), area,
      h('p', { class: 'hint', id: 'edit-alt-names-hint', text: `Subdomains or wildcards under ${domain.domain_name}, one per line; empty for none.` }));
  }

  function revocationReason() {
    const reasons = ['unspecified', 'keyCompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation', 'privilegeWithdrawn'];
    return h('div', {}, h('label', { for: 'revoke-reason', text: 'Reason' }),
      h('select', { id: 'revoke-reason' }, reasons.map((reason) => h('option', { value: reason, text: reason }))));
  }

  /** Asks in a modal dialog; answers whether the operator confirmed. */
  function confirmAction(title, question, tone, extra) {
    const dialog = $('confirm');
    $('confirm-title').textContent = `${title}?`;
    $('confirm-text').textContent = question;
    $('confirm-extra').replaceChildren(...(extra ? [extra] : []));
    const ok = $('confirm-ok');
    ok.textContent = title;
    ok.className = tone === 'danger' ? 'danger primary' : 'primary';
    return new Promise((resolve) => {
      const finish = (answer) => {
        ok.onclick = null;
        $('confirm-cancel').onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      ok.onclick = () => finish(true);
      $('confirm-cancel').onclick = () => finish(false);
      dialog.onclose = () => finish(false);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ---- The timeline and its verification ---------------------------------------------------

  /** JSON with every object's keys sorted, as the service hashes an event
   *  (`dns_handling_events::chain::write_canonical`). */
  function canonical(value) {
    if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
    if (value !== null && typeof value === 'object') {
      const keys = Object.keys(value).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      return `{${keys.map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(',')}}`;
    }
    return JSON.stringify(value);
  }

  async function sha256Hex(text) {
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
    return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, '0')).join('');
  }

  /** Checks the domain's hash chain here, in the browser: each event's hash over its content and
   *  the hash before it. Answers the sequence of the first event that does not hold, or null. */
  async function verifyChain(domainId, entries) {
    let previous = GENESIS;
    for (const entry of entries) {
      const document = {
        prev_hash: previous, aggregate_type: AGGREGATE_TYPE, aggregate_id: domainId, sequence: entry.sequence,
        event_type: entry.event_type, event_version: entry.event_version, payload: entry.payload, metadata: entry.metadata,
      };
      const expected = await sha256Hex(canonical(document));
      if (entry.prev_hash !== previous || entry.hash !== expected) return entry.sequence;
      previous = entry.hash;
    }
    return null;
  }

  function base64Bytes(text) {
    return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
  }

  /** Checks a checkpoint's Ed25519 signature here, in the browser, under `publicKey` (standard
   *  base64): the key the service holds or the one an auditor pasted, never the key the
   *  checkpoint row names, which whoever rewrote the log would have written too. False when the
   *  key is not a key; null when this browser cannot check Ed25519. */
  async function verifyCheckpoint(checkpoint, publicKey) {
    const message = `dns-handling checkpoint v1\nposition=${checkpoint.position}\nevents=${checkpoint.event_count}\nlog_hash=${checkpoint.log_hash}\nsigned_at=${checkpoint.signed_at}`;
    let raw;
    try {
      raw = base64Bytes(publicKey);
    } catch (_) {
      return false;
    }
    if (raw.length !== 32) return false;
    try {
      const key = await crypto.subtle.importKey('raw', raw, { name: 'Ed25519' }, false, ['verify']);
      return await crypto.subtle.verify({ name: 'Ed25519' }, key, base64Bytes(checkpoint.signature), new TextEncoder().encode(message));
    } catch (_) {
      return null;
    }
  }

  function who(metadata) {
    if (!metadata) return 'unknown';
    const parts = [];
    if (metadata.role) parts.push(metadata.role);
    if (metadata.actor) parts.push(`via ${metadata.actor}`);
    if (metadata.route) parts.push(`(${metadata.route})`);
    if (metadata.client_addr) parts.push(`from ${metadata.client_addr}`);
    if (metadata.request_id) parts.push(`request ${metadata.request_id}`);
    return parts.join(' ') || 'the service';
  }

  async function timelineSection(domain, events, checkpoints) {
    const title = h('h2', { id: 'timeline-title', text: 'Timeline' });
    if (events.status === 'rejected') return h('section', { 'aria-labelledby': 'timeline-title' }, title, h('p', { class: 'error', text: events.reason.message }));
    const entries = events.value;
    const broken = await verifyChain(domain.id, entries);
    const chain = broken === null
      ? h('p', { class: 'notice good', id: 'chain-verdict', 'data-verified': 'true', text: `Hash chain verified in this browser: all ${entries.length} events link, each hash recomputed from its content.` })
      : h('p', { class: 'notice bad', id: 'chain-verdict', 'data-verified': 'false', text: `Hash chain BROKEN at event ${broken}: its content or link does not match its hash.` });
    let checkpoint;
    const latest = checkpoints.status === 'fulfilled' ? (checkpoints.value.items || [])[0] : null;
    if (!latest) {
      checkpoint = h('p', { class: 'notice', id: 'checkpoint-verdict', 'data-verified': 'none', text: 'No signed checkpoint yet: nothing vouches for the end of the log.' });
    } else {
      const pinned = session.pastedKey || session.serviceKey || '';
      const whose = session.pastedKey ? 'the key you pasted' : "the service's own key";
      const signed = await verifyCheckpoint(latest, pinned);
      const covered = entries.filter((entry) => entry.position <= latest.position).length;
      const verdict = signed === null ? 'this browser cannot check Ed25519 signatures'
        : signed ? `signature verified in this browser under ${whose}`
          : latest.public_key !== pinned ? `NOT verified: it is signed by another key than ${whose}` : 'NOT verified: the signature does not hold';
      checkpoint = h('p', { class: `notice ${signed ? 'good' : 'bad'}`, id: 'checkpoint-verdict', 'data-verified': String(signed) },
        `Latest signed checkpoint: position ${latest.position}, ${latest.event_count} events, signed ${formatTime(latest.signed_at)}: ${verdict} (checked against `,
        h('code', { id: 'checkpoint-key', text: pinned }), `). It covers ${covered} of this domain's ${entries.length} events. `,
        'That the whole log still matches it is checked by ', h('code', { text: 'dns-handling audit verify' }), '.');
    }
    const keyForm = auditorKeyForm();
    const items = entries.slice().reverse().map((entry) => h('li', { class: broken !== null && entry.sequence >= broken ? 'broken' : null, 'data-event-type': entry.event_type },
      h('strong', { text: entry.event_type }), h('span', { class: 'hint', text: ` v${entry.event_version}` }),
      h('div', { class: 'when', text: `${formatTime(entry.recorded_at)} · #${entry.sequence} · by ${who(entry.metadata)}` }),
      h('details', {}, h('summary', { text: `Payload and hash ${(entry.hash || '').slice(0, 12)}…` }),
        h('pre', { text: JSON.stringify({ payload: entry.payload, metadata: entry.metadata, hash: entry.hash, prev_hash: entry.prev_hash }, null, 2) }))));
    return h('section', { 'aria-labelledby': 'timeline-title' }, title, chain, checkpoint, keyForm, h('ol', { class: 'timeline', id: 'timeline', reversed: true }, items));
  }

  /** A field for the checkpoint key an auditor was given elsewhere (`dns-handling audit
   *  public-key` on the service's host): checkpoints are then checked against it, not against
   *  the key the service serves. Kept in the tab's memory only, like the token. */
  function auditorKeyForm() {
    const field = h('input', { id: 'auditor-key', type: 'text', spellcheck: 'false', autocomplete: 'off', 'aria-describedby': 'auditor-key-hint' });
    field.value = session.pastedKey || '';
    return h('form', { class: 'filters', id: 'auditor-key-form', onsubmit: async (event) => {
      event.preventDefault();
      session.pastedKey = field.value.trim() || null;
      if (current.refresh) await current.refresh();
      announce(session.pastedKey ? 'Checkpoints are now checked against the key you pasted' : "Checkpoints are now checked against the service's own key");
    } },
    h('div', {}, h('label', { for: 'auditor-key', text: 'Checkpoint key you were given' }), field,
      h('p', { class: 'hint', id: 'auditor-key-hint', text: "The Ed25519 public key (base64) from dns-handling audit public-key; empty for the service's own key." })),
    h('div', {}, h('button', { type: 'submit', id: 'auditor-key-use', text: 'Check against this key' })));
  }

  // ---- Overview ----------------------------------------------------------------------------

  async function showOverview() {
    current = { kind: 'overview', id: null, refresh: drawOverview };
    await drawOverview();
  }

  /** A horizontal bar chart of `rows` ([label, value]), with the figures in a table beside it. */
  function barChart(id, label, rows) {
    const width = 260;
    const rowHeight = 24;
    const labelWidth = 112;
    const max = Math.max(1, ...rows.map(([, value]) => value));
    const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${rows.length * rowHeight + 4}`, role: 'img', 'aria-labelledby': `${id}-svg-title` },
      svg('title', { id: `${id}-svg-title` }, label),
      rows.map(([name, value], index) => {
        const y = index * rowHeight + 2;
        const length = Math.round(((width - labelWidth - 40) * value) / max);
        return [
          svg('text', { x: 0, y: y + 16 }, name),
          svg('rect', { x: labelWidth, y: y + 4, width: Math.max(length, value ? 2 : 0), height: rowHeight - 10, class: 'bar-plain' }),
          svg('text', { x: labelWidth + length + 6, y: y + 16 }, value),
        ];
      }));
    const table = h('table', { class: 'figures', id: `${id}-figures` },
      h('caption', { class: 'visually-hidden', text: label }),
      h('tbody', {}, rows.map(([name, value]) => h('tr', {}, h('th', { scope: 'row', text: name }), h('td', { class: 'number', text: value })))));
    return [chart, table];
  }

  /** Columns of issuances and failures per day. */
  function activityChart(days) {
    const width = 260;
    const height = 120;
    const slot = width / Math.max(days.length, 1);
    const max = Math.max(1, ...days.map((day) => Math.max(day.issued, day.failed)));
    const scale = (value) => Math.round(((height - 30) * value) / max);
    return svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': 'activity-svg-title' },
      svg('title', { id: 'activity-svg-title' }, 'Issuances and failures per day'),
      days.map((day, index) => {
        const x = index * slot;
        const bar = Math.max(2, slot / 2 - 2);
        return [
          svg('rect', { x: x + 1, y: height - 18 - scale(day.issued), width: bar, height: scale(day.issued), class: 'bar-issued' }, svg('title', {}, `${day.day}: ${day.issued} issued`)),
          svg('rect', { x: x + 1 + bar, y: height - 18 - scale(day.failed), width: bar, height: scale(day.failed), class: 'bar-failed' }, svg('title', {}, `${day.day}: ${day.failed} failed`)),
          index % Math.ceil(days.length / 7) === 0 ? svg('text', { x, y: height - 4 }, day.day.slice(5)) : null,
        ];
      }));
  }

  async function drawOverview() {
    let figures;
    try {
      figures = await api('GET', '/overview');
    } catch (failure) {
      setView('Overview', h('h1', { text: 'Overview' }), h('p', { class: 'error', role: 'alert', text: failure.message }));
      return;
    }
    const expiry = figures.certificates_by_expiry;
    const statusRows = STATUSES.map((status) => [status.replace('_', ' '), figures.domains_by_status[status] || 0]);
    const expiryRows = [['expired', expiry.expired], ['within a day', expiry.within_1d], ['1–7 days', expiry.within_7d], ['7–30 days', expiry.within_30d], ['later', expiry.later]];
    const activity = figures.activity;
    const activityTable = h('table', { class: 'figures', id: 'activity-figures' },
      h('caption', { class: 'visually-hidden', text: 'Issuances and failures per day' }),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Day' }), h('th', { scope: 'col', class: 'number', text: 'Issued' }), h('th', { scope: 'col', class: 'number', text: 'Failed' }))),
      h('tbody', {}, activity.filter((day) => day.issued || day.failed).map((day) => h('tr', {}, h('th', { scope: 'row', text: day.day }), h('td', { class: 'number', text: day.issued }), h('td', { class: 'number', text: day.failed })))));
    const card = (id, title, ...content) => h('section', { class: 'card', 'aria-labelledby': `${id}-title`, id }, h('h2', { id: `${id}-title`, text: title }), content);
    setView('Overview',
      h('h1', { text: 'Overview' }),
      h('p', { class: 'hint', text: `Read ${formatTime(figures.generated_at)}; follows the event feed.` }),
      h('div', { class: 'cards' },
        card('renewals-due', 'Renewals due within 7 days', h('p', { class: 'big', id: 'renewals-due-count', text: figures.renewals_due_within_7d }), h('p', { class: 'hint', text: 'Overdue ones included.' })),
        card('open-orders', 'Pending orders', h('p', { class: 'big', id: 'open-orders-count', text: figures.open_orders }), h('p', { class: 'hint', text: 'Orders open at the CA: first issuances and renewals.' })),
        card('by-status', 'Domains by status', barChart('status', 'Domains by status', statusRows)),
        card('by-expiry', 'Certificates by time to expiry', barChart('expiry', 'Certificates by time to expiry', expiryRows)),
        card('activity', `Issuances and failures, last ${activity.length} days`,
          h('div', { class: 'legend' }, h('span', {}, h('span', { class: 'swatch issued' }), 'issued'), h('span', {}, h('span', { class: 'swatch failed' }), 'failed')),
          activityChart(activity), activityTable)));
  }

  // ---- Registering ---------------------------------------------------------------------------

  function showRegister() {
    current = { kind: 'register', id: null, refresh: null };
    if (session.role !== 'admin') {
      setView('Register', h('h1', { text: 'Register a domain' }), h('p', { class: 'notice bad', text: 'A read-only token may not register domains.' }));
      return;
    }
    const name = h('input', { id: 'register-name', name: 'domain_name', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'shop.example.com' });
    const alt = h('textarea', { id: 'register-alt-names', name: 'alt_names', rows: 3, spellcheck: 'false', 'aria-describedby': 'register-alt-hint' });
    const error = h('p', { class: 'error', role: 'alert', id: 'register-error' });
    const form = h('form', { id: 'register-form', novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      const domainName = name.value.trim();
      const altNames = alt.value.split(/[\s,]+/).map((value) => value.trim()).filter(Boolean);
      const confirmed = await confirmAction('Register', `Register ${domainName || '(no name)'}${altNames.length ? ` with ${altNames.join(', ')}` : ''}?`, null, null);
      if (!confirmed) return;
      try {
        const created = await api('POST', '/domains', { domain_name: domainName, alt_names: altNames });
        location.hash = `#/domain/${encodeURIComponent(created.id)}`;
        announce(`${created.domain_name} registered: publish its ownership record, then verify`);
      } catch (failure) {
        error.textContent = `Register refused (${failure.status || 'network'}): ${failure.message}`;
        error.focus();
      }
    } },
    h('label', { for: 'register-name', text: 'Domain name' }), name,
    h('label', { for: 'register-alt-names', text: 'Further names (optional)' }), alt,
    h('p', { class: 'hint', id: 'register-alt-hint', text: 'Subdomains or wildcards under it, separated by spaces, commas or lines: www.shop.example.com *.shop.example.com' }),
    h('button', { type: 'submit', class: 'primary', id: 'register-submit', text: 'Register' }), error);
    error.tabIndex = -1;
    setView('Register', h('h1', { text: 'Register a domain' }), form);
  }

  // ---- Pages in files of their own ------------------------------------------------------------

  /** Pages whose script is a file of its own (`tokens.js`), by section. */
  const pages = {};

  /** What such a file draws with; it adds its page with `addPage`. */
  window.dnsConsole = Object.freeze({
    h, api, setView, confirmAction, formatTime, announce,
    role: () => session.role,
    addPage: (section, show) => { pages[section] = show; },
  });

  // ---- Start -------------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', async () => {
    $('sign-in-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const input = $('token');
      const token = input.value.trim();
      $('sign-in-error').textContent = '';
      if (!token) {
        $('sign-in-error').textContent = 'Enter a token.';
        return;
      }
      input.value = '';
      try {
        await signIn(token);
      } catch (failure) {
        $('sign-in-error').textContent = `Sign-in refused: ${failure.message}`;
        input.focus();
      }
    });
    $('sign-out').addEventListener('click', () => {
      location.hash = '';
      signOut('Signed out.');
    });
    window.addEventListener('hashchange', route);
    // A service without tokens lets everyone in as admin: no sign-in form then.
    try {
      await signIn('');
    } catch (_) {
      session.token = null;
      $('token').focus();
    }
  });
})();
