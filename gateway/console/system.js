// System: every instance's readiness per dependency, breakers, rates, backlog and lag.
import { api, el, every } from './app.js';
import { sparkline, format } from './chart.js';

const ENGINES = { postgres: 'PostgreSQL', nats: 'NATS JetStream', redis: 'Redis', sqlite: 'SQLite', embedded: 'embedded bus' };
const statusClass = (s) => (s === 'up' ? 'ok' : s === 'degraded' ? 'degraded' : 'down');

function statusOf(instance) {
  const latest = instance.latest;
  if (!latest) return ['waiting', 'degraded', 'no sample yet'];
  if (!latest.up) return ['down', 'down', latest.error || 'unreachable'];
  const ready = latest.ready && latest.ready.status;
  if (ready === 'ready') {
    const degraded = (latest.ready.checks || []).some((c) => c.status === 'degraded');
    return degraded ? ['degraded', 'degraded', 'ready on a fallback'] : ['healthy', 'ok', 'ready'];
  }
  return ['not ready', 'down', ready || 'no readiness answer'];
}

function card(instance, gatewayView) {
  const [word, cls, note] = statusOf(instance);
  const latest = instance.latest || {};
  const checks = ((latest.ready && latest.ready.checks) || []).map((c) =>
    el('li', {}, el('span', { class: `status ${statusClass(c.status)}` }, c.status), ' ', c.name, c.error ? ` — ${c.error}` : ''));
  const breakers = Object.entries(latest.breakers || {}).map(([name, state]) => el('li', {}, `breaker ${name}: `, el('strong', {}, state)));
  if (gatewayView) breakers.unshift(el('li', {}, 'gateway breaker: ', el('strong', {}, gatewayView.circuit), gatewayView.healthy ? '' : ' (failing health checks)'));
  const lag = Object.entries(latest.consumer_lag || {}).map(([group, n]) => el('li', {}, `lag ${group}: ${n}`));
  const series = instance.series || [];
  return el('article', { class: 'card', 'data-service': instance.upstream, 'data-status': word },
    el('h3', {}, instance.upstream, ' ', el('span', { class: `status ${cls}` }, word)),
    el('div', { class: 'muted' }, instance.url, ' · ', note),
    el('ul', { class: 'checks', 'aria-label': 'Readiness per dependency' }, checks),
    el('div', { class: 'charts' },
      sparkline(series.map((p) => p.requests_per_sec), 'requests', '/s'),
      sparkline(series.map((p) => p.error_rate * 100), 'errors', '%'),
      sparkline(series.map((p) => p.mean_latency_ms), 'latency', 'ms')),
    el('ul', { class: 'checks' }, breakers,
      latest.outbox_backlog === undefined || latest.outbox_backlog === null ? null : el('li', {}, `outbox backlog: ${format(latest.outbox_backlog)}`),
      lag));
}

// One row per engine: its worst status, then each instance's check with its round trip.
function dependencies(list) {
  if (!list.length) return el('p', { class: 'muted', id: 'dependencies' }, 'No dependency checks sampled yet.');
  return el('div', { class: 'table-wrap' }, el('table', { id: 'dependencies' },
    el('caption', {}, 'Dependencies, from each instance\'s readiness'),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Engine'), el('th', { scope: 'col' }, 'Status'), el('th', { scope: 'col' }, 'Checks (round trip)'))),
    el('tbody', {}, list.map((d) => el('tr', { 'data-engine': d.engine, 'data-state': d.status },
      el('th', { scope: 'row' }, ENGINES[d.engine] || d.engine),
      el('td', {}, el('span', { class: `status ${statusClass(d.status)}` }, d.status)),
      el('td', {}, d.checks.map((c) => el('div', {}, `${c.upstream} ${c.check}: ${c.status === 'up' ? '' : `${c.status} `}${c.latency_ms} ms${c.error ? ` — ${c.error}` : ''}`))))))));
}

export async function renderSystem(target) {
  const draw = async () => {
    const system = await api('GET', '/system');
    const views = new Map();
    for (const upstream of system.upstreams) {
      for (const i of [...upstream.blue.instances, ...upstream.green.instances]) views.set(i.url.replace(/\/$/, ''), i);
    }
    const healthy = system.instances.filter((i) => statusOf(i)[0] === 'healthy').length;
    target.replaceChildren(
      el('h2', {}, 'System'),
      el('p', { class: 'muted', id: 'summary' }, `${healthy} of ${system.instances.length} instances healthy · sampled every ${system.sample_interval_ms / 1000} s`),
      dependencies(system.dependencies || []),
      el('div', { class: 'grid' }, system.instances.map((i) => card(i, views.get(i.url)))));
  };
  await draw();
  every(5000, draw, target);
}
