// Messages: dead letters (error, attempts) with replay, and each consumer group's lag.
import { api, el, confirmAction, showError, time } from './app.js';

async function replay(letter, redraw) {
  const text = `Replay ${letter.event_type} ${letter.event_id} to group ${letter.group}? Its handler runs again.`;
  if (!(await confirmAction(text))) return;
  try {
    await api('POST', `/messages/${encodeURIComponent(letter.service)}/${encodeURIComponent(letter.id)}/replay`);
    await redraw();
  } catch (error) {
    showError(error);
  }
}

const head = (...names) => el('thead', {}, el('tr', {}, names.map((n) => el('th', { scope: 'col' }, n))));

export async function renderMessages(target) {
  const redraw = async () => {
    const messages = await api('GET', '/messages');
    const letters = messages.dead_letters;
    target.replaceChildren(
      el('h2', {}, 'Messages'),
      el('h3', {}, `Dead letters (${letters.length})`),
      letters.length === 0 ? el('p', { class: 'muted', id: 'no-dead-letters' }, 'No dead letters.') : el('div', { class: 'table-wrap' }, el('table', { id: 'dead-letters' },
        head('service', 'group', 'event', 'attempts', 'error', 'parked', ''),
        el('tbody', {}, letters.map((l) => el('tr', { 'data-id': l.id },
          el('td', {}, l.service), el('td', {}, l.group), el('td', {}, l.event_type, el('div', { class: 'muted' }, l.event_id)),
          el('td', {}, l.attempts), el('td', {}, l.error), el('td', {}, time(l.parked_at_ms)),
          el('td', {}, el('button', { type: 'button', onclick: () => replay(l, redraw), 'aria-label': `Replay dead letter ${l.id}` }, 'Replay'))))))),
      el('h3', {}, 'Consumer groups'),
      el('div', { class: 'table-wrap' }, el('table', {}, head('service', 'group', 'lag'),
        el('tbody', {}, messages.groups.map((g) => el('tr', {}, el('td', {}, g.service), el('td', {}, g.group), el('td', {}, g.lag)))))));
  };
  await redraw();
}
