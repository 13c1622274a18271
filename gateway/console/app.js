// The console's shell: the session, calls to the gateway, the page router, the confirmation
// dialog. The access and refresh tokens live in HttpOnly cookies this script cannot read; it
// holds only the CSRF token, in memory.
import { renderSystem } from './system.js';
import { renderOrders } from './orders.js';
import { renderMessages } from './messages.js';
import { renderTraffic } from './traffic.js';
import { renderFunnel } from './funnel.js';

const pages = { system: renderSystem, orders: renderOrders, messages: renderMessages, traffic: renderTraffic, funnel: renderFunnel };
let csrf = null;
let timer = null;

export class SignedOut extends Error {}

let renewing = null;
// When the session is renewed before a call (ms on this page's clock); null while unknown.
let renewAt = null;

// Learns a session's CSRF token, and when to renew it: shortly before the access token ends
// (30 s, or half its life if shorter), so that no call is refused for an expired token.
function keep(session) {
  csrf = session.csrf;
  const left = Number(session.expires_in);
  renewAt = Number.isFinite(left) ? Date.now() + 1000 * (left - Math.min(30, left / 2)) : null;
}

// Trades the refresh cookie for a new session once, however many calls want it at the same time:
// identity rotates refresh tokens, and a second use of the same one would end the session.
function renew() {
  if (!renewing) {
    renewing = fetch('/console/api/session/refresh', { method: 'POST', credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(async (response) => (response.ok ? response.json() : null))
      .catch(() => null)
      // A failed renewal leaves the session to the 401 path, not to every call renewing first.
      .then((session) => { if (session) keep(session); else renewAt = null; return session !== null; })
      .finally(() => { renewing = null; });
  }
  return renewing;
}

// A call to the console's API; a problem answer becomes an Error with its detail. A session
// about to end is renewed first; a 401 still renews it and tries once more.
export async function api(method, path, body, retried = false) {
  if (renewAt !== null && Date.now() >= renewAt) await renew();
  const headers = { accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = csrf || '';
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch('/console/api' + path, {
    method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    if (!retried && await renew()) return api(method, path, body, true);
    showSignIn();
    throw new SignedOut('signed out');
  }
  if (response.status === 204) return null;
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail || answer.title || `HTTP ${response.status}`);
  return answer;
}

// Builds an element; children are nodes or text (never parsed as HTML).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function time(value) {
  if (!value) return '';
  const date = typeof value === 'number' ? new Date(value) : new Date(value);
  return date.toLocaleTimeString([], { hour12: false }) + '.' + String(date.getMilliseconds()).padStart(3, '0');
}

// The open question's answer; null while the dialog is not asking anything.
let answer = null;

// A dialog's `close` event is a task queued after it closes: a question asked again before it
// ran (a quick click, input handled first under load) would take that event as its own answer.
// One listener answers whichever question is open, and only once the dialog really is closed.
document.getElementById('confirm').addEventListener('close', (event) => {
  if (event.target.open || !answer) return;
  const settle = answer;
  answer = null;
  settle(event.target.returnValue === 'ok');
});

// Asks before an action; resolves true only on Confirm. A question still open when another is
// asked is answered no.
export function confirmAction(text) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  answer?.(false);
  return new Promise((resolve) => {
    answer = resolve;
    dialog.returnValue = '';
    if (!dialog.open) dialog.showModal();
    document.getElementById('confirm-ok').focus();
  });
}

// Re-runs the page's refresh every interval while it is shown. `target` is the container its
// route rendered into: a page left while its first draw was in flight starts no timer.
export function every(ms, refresh, target) {
  if (!target.isConnected) return;
  clearInterval(timer);
  timer = setInterval(() => refresh().catch(() => {}), ms);
}

function page() { return document.getElementById('page'); }

export function showError(error) {
  if (error instanceof SignedOut) return;
  page().replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message));
}

function showSignIn() {
  clearInterval(timer);
  csrf = null;
  renewAt = null;
  document.getElementById('nav').hidden = true;
  document.getElementById('sign-out').hidden = true;
  page().replaceChildren();
  document.getElementById('sign-in').hidden = false;
  document.getElementById('email').focus();
}

function signedIn(session) {
  keep(session);
  document.getElementById('sign-in').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('sign-out').hidden = false;
  route();
}

async function route() {
  if (!csrf) return;
  clearInterval(timer);
  const [name, ...rest] = (location.hash.slice(1) || 'system').split('/');
  const render = pages[name] || renderSystem;
  for (const link of document.querySelectorAll('nav a')) {
    if (link.getAttribute('href') === '#' + name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  // Each route renders into a container of its own: a draw of the page left behind that was
  // still in flight (a slow answer) then fills a container no longer shown, not this page.
  const target = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  page().replaceChildren(target);
  try {
    await render(target, rest.map(decodeURIComponent));
  } catch (error) {
    if (target.isConnected) showError(error);
  }
}

document.getElementById('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.target;
  const message = document.getElementById('sign-in-error');
  message.textContent = '';
  try {
    const response = await fetch('/console/api/session', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ email: form.email.value, password: form.password.value }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) { message.textContent = answer.detail || 'Cannot sign in'; return; }
    form.password.value = '';
    signedIn(answer);
    document.getElementById('main').focus();
  } catch (error) {
    message.textContent = error.message;
  }
});

document.getElementById('sign-out').addEventListener('click', async () => {
  try { await api('DELETE', '/session'); } catch (error) { /* signed out either way */ }
  showSignIn();
});

window.addEventListener('hashchange', () => { route(); document.getElementById('main').focus(); });

api('GET', '/session').then(signedIn).catch(() => {});
