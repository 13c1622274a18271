// Traffic: each upstream's instances, blue/green split, switch and roll back; rate-limit classes.
import { api, el, confirmAction, showError } from './app.js';

function instances(title, group) {
  return el('div', {},
    el('h3', {}, title, ` (${group.requests} requests, ${group.failures} failed)`),
    group.instances.length
      ? el('ul', { class: 'checks' }, group.instances.map((i) =>
        el('li', {}, el('span', { class: `status ${i.healthy ? 'ok' : 'down'}` }, i.healthy ? 'healthy' : 'unhealthy'),
          ` ${i.url} · breaker ${i.circuit} · ${i.latency_ms.toFixed(1)} ms · ${i.in_flight} in flight`)))
      : el('p', { class: 'muted' }, 'no instances'));
}

async function move(name, live, redraw) {
  const text = live === 'green'
    ? `Send all of ${name}'s traffic to its green instances?`
    : `Roll ${name} back: all traffic to its blue instances?`;
  if (!(await confirmAction(text))) return;
  try {
    await api('PUT', `/traffic/${encodeURIComponent(name)}`, { live });
    await redraw();
  } catch (error) {
    showError(error);
  }
}

function upstream(u, redraw) {
  const hasGreen = u.green.instances.length > 0;
  return el('article', { class: 'card', 'data-upstream': u.name, 'data-green-percent': u.green_percent },
    el('h3', {}, u.name),
    el('p', {}, `live: `, el('strong', {}, u.live), ` · green ${u.green_percent}% · ${u.policy} · smoke ${u.smoke_path}`),
    instances('blue', u.blue), instances('green', u.green),
    hasGreen && u.green_percent < 100 ? el('button', { type: 'button', onclick: () => move(u.name, 'green', redraw) }, `Switch ${u.name} to green`) : null,
    u.green_percent > 0 ? el('button', { type: 'button', class: 'secondary', onclick: () => move(u.name, 'blue', redraw) }, `Roll ${u.name} back to blue`) : null);
}

export async function renderTraffic(target) {
  const redraw = async () => {
    const traffic = await api('GET', '/traffic');
    const classes = Object.entries(traffic.rate_limit_classes);
    target.replaceChildren(
      el('h2', {}, 'Traffic'),
      el('div', { class: 'grid' }, traffic.upstreams.map((u) => upstream(u, redraw))),
      el('h3', {}, 'Rate-limit classes'),
      el('div', { class: 'table-wrap' }, el('table', {},
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'class'), el('th', { scope: 'col' }, 'settings'))),
        el('tbody', {}, classes.map(([name, c]) => el('tr', {}, el('td', {}, name), el('td', {}, Object.entries(c).map(([k, v]) => `${k} ${v}`).join(' · '))))))));
  };
  await redraw();
}
