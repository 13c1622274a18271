// Checkout funnel: orders placed, confirmed and cancelled (by reason) per minute, live.
import { api, el, every } from './app.js';
import { svg } from './chart.js';

function bars(minutes) {
  const height = 160, width = 1000;
  const max = Math.max(1, ...minutes.map((m) => Math.max(m.placed, m.confirmed, m.cancelled)));
  const slot = width / Math.max(minutes.length, 1);
  const bar = slot / 3.5;
  const chart = svg('svg', { class: 'bars', viewBox: `0 0 ${width} ${height + 20}`, role: 'img', 'aria-label': 'Orders per minute: placed, confirmed, cancelled' });
  minutes.forEach((m, i) => {
    [['placed', m.placed], ['confirmed', m.confirmed], ['cancelled', m.cancelled]].forEach(([kind, n], k) => {
      const h = (n / max) * height;
      chart.append(svg('rect', { class: kind, x: i * slot + k * bar, y: height - h, width: bar - 1, height: h }, svg('title', {}, `${m.minute} ${kind} ${n}`)));
    });
  });
  return chart;
}

export async function renderFunnel(target) {
  const draw = async () => {
    const funnel = await api('GET', '/funnel');
    const minutes = funnel.minutes;
    target.replaceChildren(
      el('h2', {}, 'Checkout funnel'),
      el('p', { class: 'legend' }, el('span', {}, '■ placed'), el('span', {}, '■ confirmed'), el('span', {}, '■ cancelled')),
      bars(minutes),
      el('div', { class: 'table-wrap' }, el('table', { id: 'funnel' },
        el('thead', {}, el('tr', {}, ['minute (UTC)', 'placed', 'confirmed', 'cancelled', 'by reason'].map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, minutes.slice().reverse().map((m) => el('tr', {}, el('td', {}, m.minute), el('td', {}, m.placed), el('td', {}, m.confirmed), el('td', {}, m.cancelled),
          el('td', {}, Object.entries(m.cancelled_by_reason || {}).map(([r, n]) => `${r} ${n}`).join(', '))))))));
  };
  await draw();
  every(10000, draw, target);
}
