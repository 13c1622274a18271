// Orders: find by id or a customer's e-mail; the saga's timeline, payment, notifications and the
// trace as a waterfall.
import { api, el, time, showError } from './app.js';
import { svg } from './chart.js';

// Minor units shown with two decimals (the shop's currencies all have two).
const money = (m) => (m ? `${(m.amount_minor / 100).toFixed(2)} ${m.currency}` : '');

const COMPENSATIONS = ['ReleaseStock', 'RefundPayment'];

function searchForm(value) {
  const input = el('input', { id: 'order-query', name: 'query', required: true, value: value || '', placeholder: 'order id or customer@example.com' });
  return el('form', { role: 'search', onsubmit: (event) => {
    event.preventDefault();
    const query = input.value.trim();
    location.hash = query.includes('@') ? `#orders/by-email/${encodeURIComponent(query)}` : `#orders/${encodeURIComponent(query)}`;
  } }, el('label', { for: 'order-query' }, 'Order id or customer e-mail'), input, el('button', { type: 'submit' }, 'Find'));
}

function timeline(events) {
  return el('ol', { class: 'timeline', id: 'timeline', 'aria-label': 'Saga timeline' }, events.map((e) => {
    const kind = COMPENSATIONS.includes(e.type) ? 'compensation' : e.type === 'OrderCancelled' ? 'cancelled' : 'step';
    const detail = e.type === 'OrderCancelled' && e.data && e.data.reason ? ` — reason: ${e.data.reason}` : '';
    return el('li', { class: kind, 'data-type': e.type },
      el('strong', {}, e.type), kind === 'compensation' ? ' (compensation)' : '', detail,
      el('div', { class: 'muted' }, `#${e.position} · ${time(e.recorded_at)}`));
  }));
}

function waterfall(spans) {
  if (!spans.length) return el('p', { class: 'muted', id: 'waterfall' }, 'No spans kept for this order (tracing off, or older than the span stores hold).');
  const start = Math.min(...spans.map((s) => s.start_ns));
  const end = Math.max(...spans.map((s) => s.end_ns));
  const total = Math.max(end - start, 1);
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const depth = (s) => { let d = 0; let p = s; while (p.parent_span_id && byId.has(p.parent_span_id) && d < 20) { p = byId.get(p.parent_span_id); d += 1; } return d; };
  const row = 18, labelWidth = 42;
  const chart = svg('svg', { class: 'waterfall', id: 'waterfall', viewBox: `0 0 100 ${spans.length * row / 8}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `Trace waterfall, ${spans.length} spans over ${((end - start) / 1e6).toFixed(1)} ms` });
  chart.setAttribute('height', spans.length * row);
  chart.setAttribute('viewBox', `0 0 1000 ${spans.length * row}`);
  chart.removeAttribute('preserveAspectRatio');
  spans.forEach((s, i) => {
    const x = labelWidth * 10 + ((s.start_ns - start) / total) * (1000 - labelWidth * 10);
    const w = Math.max(((s.end_ns - s.start_ns) / total) * (1000 - labelWidth * 10), 1.5);
    const ms = ((s.end_ns - s.start_ns) / 1e6).toFixed(1);
    chart.append(
      svg('text', { x: 4 + depth(s) * 8, y: i * row + 13 }, `${s.service}: ${s.name}`.slice(0, 60)),
      svg('rect', { x, y: i * row + 3, width: w, height: row - 6, class: s.kind || 'internal' }, svg('title', {}, `${s.service} ${s.name} ${ms} ms`)));
  });
  return el('div', { class: 'table-wrap' }, chart);
}

function summary(order) {
  return el('div', { class: 'card', id: 'order-summary' },
    el('p', {}, 'Status: ', el('strong', { id: 'order-status' }, order.status), order.cancel_reason ? ` (${order.cancel_reason})` : ''),
    el('p', { class: 'muted' }, `order ${order.id} · ${order.items.length} line(s) · total ${money(order.total)} · placed ${order.created_at}`));
}

// Each call to the provider: step and attempt, when, how long, and how it ended.
function attempts(list) {
  if (!list || !list.length) return el('p', { class: 'muted' }, 'The provider has not been called.');
  return el('div', { class: 'table-wrap' }, el('table', { id: 'provider-attempts' },
    el('caption', {}, 'Provider calls'),
    el('thead', {}, el('tr', {}, ['Step', 'Attempt', 'At', 'Took', 'Outcome'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, list.map((a) => el('tr', { 'data-step': a.step, 'data-outcome': a.outcome },
      el('td', {}, a.step), el('td', {}, `#${a.attempt}`), el('td', {}, time(a.at)), el('td', {}, `${a.duration_ms} ms`),
      el('td', {}, el('strong', {}, a.outcome), a.provider_id ? ` ${a.provider_id}` : '', a.error ? ` — ${a.error}` : ''))))));
}

function payment(p) {
  if (!p) return el('p', { class: 'muted' }, 'No payment recorded.');
  return el('div', { class: 'card', id: 'payment' },
    el('p', {}, 'Payment: ', el('strong', {}, p.status), ` · ${money(p.amount)}`),
    attempts(p.provider_attempts),
    el('ul', { class: 'checks' },
      p.provider_charge_id ? el('li', {}, `charge ${p.provider_charge_id}`) : null,
      p.provider_refund_id ? el('li', {}, `refund ${p.provider_refund_id}`) : null,
      p.refund_requested ? el('li', {}, 'refund requested (compensation)') : null,
      p.last_error ? el('li', {}, `last error: ${p.last_error}`) : null));
}

function notifications(items) {
  if (!items || !items.length) return el('p', { class: 'muted' }, 'No notifications sent.');
  return el('ul', { class: 'checks', id: 'notifications' }, items.map((n) => el('li', {}, `${time(n.created_at)} ${n.channel} · ${n.kind} · ${n.state}${n.recipient ? ` to ${n.recipient}` : ''}`)));
}

async function byEmail(target, email) {
  const found = await api('GET', `/orders?email=${encodeURIComponent(email)}`);
  target.append(el('h3', {}, `Orders of ${email}`),
    found.orders.length ? el('ul', { id: 'found-orders' }, found.orders.map((o) => el('li', {},
      el('a', { href: `#orders/${encodeURIComponent(o.id)}` }, o.id), ` · ${o.status} · ${o.created_at || ''}`))) : el('p', { class: 'muted' }, 'No orders.'));
}

async function one(target, id) {
  const found = await api('GET', `/orders/${encodeURIComponent(id)}`);
  target.append(
    el('h3', {}, `Order ${id}`), summary(found.order),
    el('h3', {}, 'Saga'), timeline(found.events || []),
    el('h3', {}, 'Payment'), payment(found.payment),
    el('h3', {}, 'Notifications'), notifications(found.notifications),
    el('h3', {}, 'Trace'), waterfall(found.spans || []));
}

export async function renderOrders(target, [first, second]) {
  target.replaceChildren(el('h2', {}, 'Orders'), searchForm(first === 'by-email' ? second : first));
  const results = el('div', { id: 'order-results' });
  target.append(results);
  try {
    if (first === 'by-email' && second) await byEmail(results, second);
    else if (first) await one(results, first);
  } catch (error) {
    results.append(el('p', { class: 'error', role: 'alert' }, error.message));
  }
  void showError;
}
