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

// The members of the mesh: those of other sites (remote, over NATS) have
// no links and no place in the graph.
function meshOf(p) {
  return p.members.filter((m) => !m.remote);
}

// The graph: nodes on a circle, in id order, a line per link.
function renderGraph(p) {
  const svg = $('#graph');
  svg.replaceChildren();
  const members = meshOf(p);
  const n = members.length;
  if (n === 0) {
    svg.append(make('text', { x: 230, y: 190, class: 'empty' }, 'no nodes yet'));
    return;
  }
  const radius = n === 1 ? 0 : 130;
  const angles = members.map((m, i) => (n === 1 ? Math.PI / 2 : -Math.PI / 2 + (2 * Math.PI * i) / n));
  // Centre the drawing (a triangle's bottom is nearer the centre than its top).
  const ys = angles.map((a) => radius * Math.sin(a));
  const dy = 180 - (Math.min(...ys) + Math.max(...ys)) / 2;
  const round = (v) => Math.round(v * 10) / 10;
  const pos = new Map();
  members.forEach((m, i) => {
    pos.set(m.id, [round(230 + radius * Math.cos(angles[i])), round(dy + ys[i])]);
  });
  for (const [a, b] of p.links) {
    const [x1, y1] = pos.get(a);
    const [x2, y2] = pos.get(b);
    const line = make('line', { class: 'edge', x1, y1, x2, y2, 'data-a': a, 'data-b': b });
    line.append(make('title', {}, `${a} — ${b}`));
    svg.append(line);
  }
  members.forEach((m, i) => {
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

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// The nodes table: the mesh's nodes, then the members of each other site
// under a row that names it. With sites, a column says each one's site.
function renderNodes(p) {
  const sites = !!p.site || p.members.some((m) => m.site);
  const head = make('tr');
  for (const h of ['id', sites && 'site', 'addresses', 'up']) {
    if (h) head.append(make('th', {}, h));
  }
  $('#nodes thead').replaceChildren(head);
  const cols = head.children.length;
  const body = $('#nodes tbody');
  body.replaceChildren();
  if (p.members.length === 0) {
    const tr = make('tr');
    tr.append(make('td', { colspan: cols, class: 'empty' }, 'no nodes'));
    body.append(tr);
  }
  let group = null;
  for (const m of p.members) {
    if (m.remote && m.site !== group) {
      group = m.site;
      const tr = make('tr', { class: 'group', 'data-site': group });
      tr.append(make('td', { colspan: cols }, `site ${group}`));
      tr.firstChild.append(make('span', { class: 'muted' }, ' · another site, over NATS'));
      body.append(tr);
    }
    const tr = make('tr', { 'data-id': m.id, class: m.remote ? 'remote' : null });
    const id = make('td', { class: 'mono' }, m.id);
    if (m.self) id.append(make('span', { class: 'badge' }, 'this node'));
    if (m.remote) id.append(make('span', { class: 'badge remote' }, 'remote'));
    tr.append(id);
    if (sites) tr.append(make('td', { class: 'mono site' }, m.site || ''));
    if (m.remote) {
      tr.append(make('td', { class: 'muted' }, 'over NATS, not linked'),
        make('td', { class: 'up', title: 'a member of another site: heard over NATS, not linked' }, '—'));
    } else {
      const [up, why] = upText(m);
      tr.append(make('td', { class: 'mono' }, m.addrs.join(' ')), make('td', { class: 'up', title: why }, up));
    }
    body.append(tr);
  }
  const mesh = meshOf(p).length;
  const remote = p.members.length - mesh;
  let counts = `${plural(mesh, 'node')}, ${plural(p.links.length, 'link')}`;
  if (remote > 0) {
    const others = new Set(p.members.filter((m) => m.remote).map((m) => m.site)).size;
    counts += `; ${remote} in ${plural(others, 'other site')}`;
  }
  $('#counts').textContent = counts;
}

// The header's site and NATS: shown with sites only.
function renderSites(p) {
  const site = $('#site');
  site.hidden = !p.site;
  site.textContent = p.site ? `site ${p.site}` : '';
  const nats = $('#nats');
  nats.hidden = !p.nats;
  if (!p.nats) return;
  nats.textContent = p.nats.connected ? `NATS ${p.nats.url}` : 'NATS down';
  nats.className = 'status ' + (p.nats.connected ? 'live' : 'down');
  nats.title = p.nats.connected
    ? 'connected to NATS: the other sites are joined'
    : 'NATS is out of reach: this site goes on alone, and reconnects';
}

function tickUptimes() {
  if (!picture) return;
  for (const tr of document.querySelectorAll('#nodes tbody tr[data-id]')) {
    const m = picture.members.find((x) => x.id === tr.dataset.id);
    if (m && !m.remote) tr.querySelector('td.up').textContent = upText(m)[0];
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
    renderSites(picture);
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
