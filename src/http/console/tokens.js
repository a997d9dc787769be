// The console's tokens page (admins): the tokens the service manages, making one (its secret
// shown on this page this once, never kept by the page after it is drawn again) and revoking
// one. It draws with the helpers `console.js` hands over in `window.dnsConsole`.
'use strict';

(() => {
  const { h, api, setView, confirmAction, formatTime, announce, role, addPage } = window.dnsConsole;
  const ROLES = ['auditor', 'admin', 'edge', 'tenant'];

  async function showTokens() {
    if (role() !== 'admin') {
      setView('Tokens', h('h1', { text: 'Tokens' }), h('p', { class: 'notice bad', text: 'Only an admin token manages tokens.' }));
      return;
    }
    await drawTokens(null);
  }

  /** The page; `made` is the token just made, whose secret it shows this once. */
  async function drawTokens(made) {
    let list;
    try {
      list = await api('GET', '/tokens');
    } catch (failure) {
      setView('Tokens', h('h1', { text: 'Tokens' }), h('p', { class: 'error', role: 'alert', id: 'tokens-error', text: failure.message }));
      return;
    }
    const secret = made ? h('div', { class: 'notice good', id: 'token-made', role: 'status', tabindex: -1 },
      h('p', { text: `Token “${made.name}” made. Copy its secret now: it is shown this once and never again.` }),
      h('code', { id: 'token-secret', text: made.secret })) : null;
    const rows = list.items.map((token) => h('tr', { 'data-token-id': token.id },
      h('td', { 'data-label': 'Name', text: token.name }),
      h('td', { 'data-label': 'Role', text: token.tenant ? `${token.role} (${token.tenant})` : token.role }),
      h('td', { 'data-label': 'Status', class: 'token-status', text: token.status }),
      h('td', { 'data-label': 'Expires', text: formatTime(token.expires_at) }),
      h('td', { 'data-label': 'Last used', text: formatTime(token.last_used_at) }),
      h('td', { 'data-label': 'Allowed from', text: token.allowed_from.join(', ') || 'any address' }),
      h('td', {}, token.status === 'active'
        ? h('button', { type: 'button', class: 'danger', id: `revoke-${token.id}`, 'aria-label': `Revoke ${token.name}`, text: 'Revoke', onclick: () => revoke(token) })
        : null)));
    const table = h('table', { class: 'stack', id: 'token-table' },
      h('caption', { class: 'visually-hidden', text: 'Managed tokens' }),
      h('thead', {}, h('tr', {}, ['Name', 'Role', 'Status', 'Expires', 'Last used', 'Allowed from', 'Action'].map((title) => h('th', { scope: 'col', text: title })))),
      h('tbody', {}, rows));
    setView('Tokens', h('h1', { text: 'Tokens' }), secret, createForm(),
      h('h2', { text: 'Managed tokens' }),
      h('p', { class: 'hint', text: 'The environment’s tokens (AUTH_TOKEN, READ_ONLY_TOKENS, EDGE_TOKENS) are not listed.' }),
      table);
  }

  function field(id, label, attributes) {
    return [h('label', { for: id, text: label }), h('input', { id, type: 'text', autocomplete: 'off', spellcheck: 'false', ...attributes })];
  }

  function createForm() {
    const error = h('p', { class: 'error', role: 'alert', id: 'token-error', tabindex: -1 });
    const value = (id) => document.getElementById(id).value.trim();
    return h('form', { id: 'token-form', novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      const body = { name: value('token-name'), role: value('token-role') };
      if (value('token-tenant')) body.tenant = value('token-tenant');
      if (value('token-expires')) body.expires_at = value('token-expires');
      const allowed = value('token-allowed').split(/[\s,]+/).filter(Boolean);
      if (allowed.length) body.allowed_from = allowed;
      try {
        const made = await api('POST', '/tokens', body);
        announce(`Token ${made.name} made: copy its secret now`);
        await drawTokens(made);
        document.getElementById('token-made').focus();
      } catch (failure) {
        error.textContent = `Refused (${failure.status || 'network'}): ${failure.message}`;
        error.focus();
      }
    } },
    h('h2', { text: 'Make a token' }),
    field('token-name', 'Name', { required: true, placeholder: 'deploy pipeline' }),
    h('label', { for: 'token-role', text: 'Role' }),
    h('select', { id: 'token-role' }, ROLES.map((name) => h('option', { value: name, text: name }))),
    field('token-tenant', 'Tenant (role tenant only)', { placeholder: 'acct_123' }),
    field('token-expires', 'Expires at (optional, RFC 3339)', { placeholder: '2027-01-31T00:00:00Z' }),
    field('token-allowed', 'Allowed from (optional prefixes)', { placeholder: '10.0.0.0/8, 2001:db8::/32' }),
    h('p', {}, h('button', { type: 'submit', class: 'primary', id: 'token-create', text: 'Make token' })),
    error);
  }

  async function revoke(token) {
    const confirmed = await confirmAction('Revoke', `Revoke the token “${token.name}”? Every replica refuses it within a second; this cannot be undone.`, 'danger', null);
    if (!confirmed) return;
    try {
      await api('DELETE', `/tokens/${encodeURIComponent(token.id)}`);
      announce(`Token ${token.name} revoked`);
    } catch (failure) {
      announce(`Revoke refused: ${failure.message}`);
    }
    await drawTokens(null);
  }

  addPage('tokens', showTokens);
})();
