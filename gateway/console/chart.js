// Small charts drawn as inline SVG.
const NS = 'http://www.w3.org/2000/svg';

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// A sparkline of `values`, labelled for screen readers with its latest value.
export function sparkline(values, label, unit) {
  const width = 84, height = 32;
  const max = Math.max(...values, 0) || 1;
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  const latest = values.length ? values[values.length - 1] : 0;
  const text = `${label}: ${format(latest)} ${unit}`;
  const chart = svg('svg', { class: 'spark', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': text },
    svg('title', {}, text), svg('polyline', { points: points.join(' ') }));
  const figure = document.createElement('figure');
  const caption = document.createElement('figcaption');
  caption.textContent = text;
  figure.append(chart, caption);
  return figure;
}

export function format(value) {
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}
