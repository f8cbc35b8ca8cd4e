// The tallship dashboard: one EventSource on /api/events keeps the picture
// live; the services table asks /api/services?q= (the server parses the
// query). No framework, nothing loaded from elsewhere.
'use strict';

const $ = (sel) => document.querySelector(sel);
const SVG = 'http://www.w3.org/2000/svg';
const LOG_MAX = 500;

let picture = null;   // the last "members" message
let clockOffset = 0;  // server clock minus browser clock, in ms
let query = '';
let servicesSeq = 0;
let servicesTimer = 0;

function short(id) {
  return id.length > 12 ? id.slice(0, 8) + '…' : id;
}

function make(tag, attrs = {}, text) {
  const ns = ['svg', 'g', 'line', 'circle', 'text', 'title'].includes(tag) ? SVG : null;
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  return e;
}

function duration(ms) {
  if (ms < 1000) return '<1s';
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const two = (n) => String(n).padStart(2, '0');
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${two(m)}m`;
  if (m) return `${m}m ${two(s)}s`;
  return `${s}s`;
}

function serverNow() {
  return Date.now() + clockOffset;
}

// The graph: nodes on a circle, in id order, a line per link.
function renderGraph(p) {
  const svg = $('#graph');
  svg.replaceChildren();
  const n = p.members.length;
  if (n === 0) {
    svg.append(make('text', { x: 230, y: 190, class: 'empty' }, 'no nodes yet'));
    return;
  }
  const radius = n === 1 ? 0 : 130;
  const angles = p.members.map((m, i) => (n === 1 ? Math.PI / 2 : -Math.PI / 2 + (2 * Math.PI * i) / n));
  // Centre the drawing (a triangle's bottom is nearer the centre than its top).
  const ys = angles.map((a) => radius * Math.sin(a));
  const dy = 180 - (Math.min(...ys) + Math.max(...ys)) / 2;
  const round = (v) => Math.round(v * 10) / 10;
  const pos = new Map();
  p.members.forEach((m, i) => {
    pos.set(m.id, [round(230 + radius * Math.cos(angles[i])), round(dy + ys[i])]);
  });
  for (const [a, b] of p.links) {
    const [x1, y1] = pos.get(a);
    const [x2, y2] = pos.get(b);
    const line = make('line', { class: 'edge', x1, y1, x2, y2, 'data-a': a, 'data-b': b });
    line.append(make('title', {}, `${a} — ${b}`));
    svg.append(line);
  }
  p.members.forEach((m, i) => {
    const [x, y] = pos.get(m.id);
    const cls = ['node', m.self && 'self', !m.reports && 'unreported', !m.direct && !m.self && 'indirect']
      .filter(Boolean).join(' ');
    const g = make('g', { class: cls, 'data-id': m.id });
    g.append(make('title', {}, `${m.id}\n${m.addrs.join('\n')}`));
    g.append(make('circle', { cx: x, cy: y, r: 20 }));
    // The label outside the circle, away from the links.
    const cos = Math.cos(angles[i]);
    const sin = Math.sin(angles[i]);
    const label = Math.abs(cos) > 0.3
      ? { x: x + Math.sign(cos) * 27, y: y + 4 + sin * 12, 'text-anchor': cos > 0 ? 'start' : 'end' }
      : { x, y: sin < 0 ? y - 28 : y + 36 };
    g.append(make('text', label, short(m.id)));
    svg.append(g);
  });
}

function upText(m) {
  if (m.up_since) {
    return [duration(serverNow() - Date.parse(m.up_since)), 'since the node started'];
  }
  if (m.linked_since) {
    const d = duration(serverNow() - Date.parse(m.linked_since));
    return [d.startsWith('<') ? d : '≥ ' + d,
      'at least as long as its link to this dashboard (the node does not report its start)'];
  }
  return ['—', 'unknown: the node is not linked to this dashboard'];
}

function renderNodes(p) {
  const body = $('#nodes tbody');
  body.replaceChildren();
  if (p.members.length === 0) {
    const tr = make('tr');
    tr.append(make('td', { colspan: 3, class: 'empty' }, 'no nodes'));
    body.append(tr);
  }
  for (const m of p.members) {
    const tr = make('tr', { 'data-id': m.id });
    const id = make('td', { class: 'mono' }, m.id);
    if (m.self) id.append(make('span', { class: 'badge' }, 'this node'));
    const [up, why] = upText(m);
    tr.append(id, make('td', { class: 'mono' }, m.addrs.join(' ')), make('td', { class: 'up', title: why }, up));
    body.append(tr);
  }
  const links = p.links.length;
  $('#counts').textContent = `${p.members.length} node${p.members.length === 1 ? '' : 's'}, ${links} link${links === 1 ? '' : 's'}`;
}

function tickUptimes() {
  if (!picture) return;
  for (const tr of document.querySelectorAll('#nodes tbody tr[data-id]')) {
    const m = picture.members.find((x) => x.id === tr.dataset.id);
    if (m) tr.querySelector('td.up').textContent = upText(m)[0];
  }
}

function renderServices(list) {
  const body = $('#services tbody');
  body.replaceChildren();
  if (list.length === 0) {
    const tr = make('tr');
    tr.append(make('td', { colspan: 4, class: 'empty' }, query ? `no service matches ${query}` : 'no services'));
    body.append(tr);
  }
  for (const s of list) {
    const tr = make('tr', { 'data-id': s.id, 'data-role': s.role });
    tr.append(make('td', {}, s.name), make('td', {}, s.version),
      make('td', { class: 'mono' }, s.addr),
      // With sites (--nats), the owner's site beside it.
      make('td', { class: 'mono', title: s.site ? `${s.owner} of site ${s.site}` : s.owner }, s.site ? `${s.owner} (${s.site})` : s.owner));
    body.append(tr);
  }
}

function showFilterError(msg) {
  const e = $('#filter-error');
  e.textContent = msg || '';
  e.hidden = !msg;
  $('#filter').classList.toggle('invalid', !!msg);
}

async function loadServices() {
  const seq = ++servicesSeq;
  try {
    const r = await fetch('/api/services?q=' + encodeURIComponent(query), { cache: 'no-store' });
    const body = await r.json();
    if (seq !== servicesSeq) return; // a newer request is on its way
    if (!r.ok) {
      showFilterError(body.error || `HTTP ${r.status}`);
      renderServices([]);
      return;
    }
    showFilterError('');
    renderServices(body.services);
  } catch (err) {
    if (seq === servicesSeq) showFilterError('cannot load services: ' + err);
  }
}

function scheduleServices(delay) {
  clearTimeout(servicesTimer);
  servicesTimer = setTimeout(loadServices, delay);
}

function logItem(e) {
  const li = make('li', { class: e.event });
  const rest = e.line.slice(13).trim();
  const details = rest.startsWith(e.event) ? rest.slice(e.event.length).trim() : rest;
  li.append(make('time', {}, e.line.slice(0, 12)), ' ', make('span', { class: 'kind' }, e.event), ' ', details);
  return li;
}

function appendLog(entries, reset) {
  const log = $('#log');
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  if (reset) log.replaceChildren();
  for (const e of entries) log.append(logItem(e));
  while (log.children.length > LOG_MAX) log.firstChild.remove();
  if (atEnd || reset) log.scrollTop = log.scrollHeight;
}

function connect() {
  const status = $('#status');
  const es = new EventSource('/api/events');
  es.onopen = () => {
    status.textContent = 'live';
    status.className = 'status live';
  };
  es.onerror = () => {
    status.textContent = 'reconnecting…';
    status.className = 'status down';
  };
  es.addEventListener('hello', (ev) => {
    const h = JSON.parse(ev.data);
    $('#cluster').textContent = h.cluster;
    document.title = `tallship ${h.cluster}`;
    $('#self').textContent = (h.observer ? 'observer ' : 'node ') + h.self;
    scheduleServices(0);
  });
  es.addEventListener('members', (ev) => {
    picture = JSON.parse(ev.data);
    clockOffset = Date.parse(picture.time) - Date.now();
    renderGraph(picture);
    renderNodes(picture);
  });
  es.addEventListener('log', (ev) => appendLog(JSON.parse(ev.data), true));
  es.addEventListener('event', (ev) => {
    const e = JSON.parse(ev.data);
    appendLog([e], false);
    if (e.event.startsWith('service-')) scheduleServices(50);
  });
}

$('#filter-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  query = $('#filter').value.trim();
  scheduleServices(0);
});
$('#filter').addEventListener('input', () => {
  query = $('#filter').value.trim();
  scheduleServices(200);
});
setInterval(tickUptimes, 1000);
connect();
