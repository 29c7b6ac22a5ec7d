"""The Embeddings tab's explorer, drawn in the browser: the script, style and template of its ``gr.HTML``.

The component's value is the data ``/embeddings`` returns (:func:`profashion.ui.tab_embeddings.explorer_data`);
its template is one empty ``div`` that never changes, so Gradio leaves the drawing alone and ``watch('value')``
redraws when a new value arrives. Everything after that runs here, without a request:

- one SVG scatter per model side by side (stacked on a phone), the page's width, a legend with counts under each;
- hover: a tooltip with the item's thumbnail (its URL on Gradio's file route), id and values, and the same item
  outlined in the other plot;
- click: the point and its K nearest neighbours in the model's full space highlighted in both plots (each plot
  with its own model's neighbours, lines joining them), the rest faded; a ``click`` event with the item id
  (the server then lists the neighbours below); Escape or a click on the background clears it;
- box or lasso selection in either plot: the selected items highlighted in both plots and shown as a grid with
  their values and the purity (share of the most common value of the colour attribute);
- colour by any attribute; zoom: ctrl + wheel, the +/- buttons, a zoom box, pan, reset.

The neighbours panel (``NEIGHBOUR_CLICK_JS``) sends a click on a neighbour to the server and asks the explorer
(a ``pf-emb-focus`` window event) to highlight the item its new value shows.
"""

from __future__ import annotations

EXPLORER_HTML = '<div class="pf-emb"></div>'

EXPLORER_CSS = """
.pf-emb { position: relative; font-size: 13px; line-height: 1.3; color: var(--body-text-color, #111); }
.pf-e-hint { color: var(--body-text-color-subdued, #555); padding: 8px 2px; }
.pf-e-bar { display: flex; flex-wrap: wrap; gap: 6px 10px; align-items: center; margin: 2px 0 6px; }
.pf-e-bar button, .pf-e-bar select { font: inherit; padding: 3px 9px; border: 1px solid var(--border-color-primary, #cbd5e1);
  border-radius: 6px; background: var(--background-fill-primary, #fff); color: var(--body-text-color, #111);
  cursor: pointer; }
.pf-e-bar button[aria-pressed=true] { background: #1d4ed8; border-color: #1d4ed8; color: #fff; }
.pf-e-bar button:focus-visible, .pf-e-bar select:focus-visible { outline: 2px solid #2563eb; outline-offset: 1px; }
.pf-e-group { display: inline-flex; gap: 4px; align-items: center; }
.pf-e-plots { display: flex; gap: 12px; width: 100%; }
.pf-e-plot { flex: 1 1 0; min-width: 0; }
.pf-e-title { font-weight: 600; margin: 0 0 2px 2px; overflow-wrap: anywhere; }
.pf-e-svg { display: block; width: 100%; height: auto; background: #fff; border: 1px solid #d4d4d8;
  border-radius: 4px; touch-action: pan-y; user-select: none; -webkit-user-select: none; }
.pf-e-svg.pf-m-box, .pf-e-svg.pf-m-lasso, .pf-e-svg.pf-m-zoom { cursor: crosshair; }
.pf-e-svg.pf-m-pan { cursor: grab; }
.pf-e-svg circle { fill-opacity: 0.85; stroke-width: 0.6; cursor: pointer; }
.pf-e-svg.pf-faded circle { opacity: 0.16; }
.pf-e-svg.pf-faded circle.pf-on { opacity: 1; }
.pf-e-svg circle.pf-nn { stroke: #111; stroke-width: 1.6; r: 6px; fill-opacity: 1; }
.pf-e-svg circle.pf-focus { stroke: #000; stroke-width: 2.6; r: 8px; fill-opacity: 1; }
.pf-e-svg circle.pf-sel { stroke: #111; stroke-width: 1.2; }
.pf-e-svg circle.pf-hov { stroke: #000; stroke-width: 2.4; r: 7px; opacity: 1; }
.pf-e-links line { stroke: #111; stroke-width: 1; stroke-opacity: 0.55; }
.pf-e-band { fill: rgba(37, 99, 235, 0.12); stroke: #2563eb; stroke-width: 1; stroke-dasharray: 4 3; }
.pf-e-legend { display: flex; flex-wrap: wrap; gap: 2px 12px; margin: 4px 2px 0; font-size: 12px; }
.pf-e-legend span { display: inline-flex; align-items: center; gap: 4px; }
.pf-e-legend i { display: inline-block; width: 10px; height: 10px; border-radius: 50%; border: 1px solid #777; }
.pf-e-tip { position: absolute; z-index: 20; pointer-events: none; background: var(--background-fill-primary, #fff);
  border: 1px solid #94a3b8;
  border-radius: 6px; box-shadow: 0 4px 14px rgba(0, 0, 0, 0.18); padding: 6px; display: flex; gap: 8px;
  max-width: 300px; font-size: 12px; }
.pf-e-tip img { width: 96px; height: 96px; object-fit: contain; background: #f4f4f5; flex: none; }
.pf-e-tip b { font-size: 13px; }
.pf-e-model { color: var(--body-text-color-subdued, #555); }
.pf-e-info { margin: 8px 2px 4px; min-height: 1.3em; }
.pf-e-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(92px, 1fr)); gap: 6px;
  max-height: 460px; overflow-y: auto; }
.pf-e-card { display: flex; flex-direction: column; align-items: center; font: inherit; font-size: 11px;
  text-align: center; color: inherit; background: none; cursor: pointer; border: 1px solid #e4e4e7;
  border-radius: 4px; padding: 3px; overflow-wrap: anywhere; }
.pf-e-card img { width: 80px; height: 80px; object-fit: contain; }
.pf-e-card.pf-major { border-color: #15803d; }
.pf-e-card.pf-minor { border-color: #b91c1c; }
@media (max-width: 720px) { .pf-e-plots { flex-direction: column; } }
"""

EXPLORER_JS = r"""
const root = element.querySelector('.pf-emb') || element;
const NS = 'http://www.w3.org/2000/svg';
const W = 560, H = 460, P = 12, R = 4, GRID_MAX = 300;
const S = {data: null, cb: 0, mode: 'box', focus: null, sel: null, selNote: '', plots: []};

function el(tag, attrs, text) {
  const e = tag.startsWith('svg:') ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { if (v !== null && v !== undefined) e.setAttribute(k, v); }
  if (text !== undefined) e.textContent = text;
  return e;
}
const D = () => S.data;
const info = (item) => D().items[String(item)];
const url = (item) => { const it = info(item); return it ? D().url_prefix + it.u : ''; };
function valueOf(item, a) { const it = info(item); return it ? it.v[a] : -1; }
function valueName(item, a) { const v = valueOf(item, a); return v >= 0 ? D().value_names[a][v] : 'unknown'; }
const projected = () => Math.max(0, D().attributes.indexOf(D().attribute));

// -- geometry: unit coordinates -> the plot's viewBox, with its zoom (k, tx, ty) ---------------------------
function base(p, i) {
  const s = Math.min(W, H) - 2 * P;
  return [(W - s) / 2 + p.x[i] * s, (H - s) / 2 + (1 - p.y[i]) * s];
}
function screen(pl, i) {
  const [bx, by] = base(pl.p, i);
  return [bx * pl.z.k + pl.z.tx, by * pl.z.k + pl.z.ty];
}
function svgPoint(pl, e) {
  const r = pl.svg.getBoundingClientRect();
  return [(e.clientX - r.left) * W / r.width, (e.clientY - r.top) * H / r.height];
}
function zoomAt(pl, f, cx, cy) {
  const k = Math.min(60, Math.max(1, pl.z.k * f));
  f = k / pl.z.k;
  if (k === 1) { pl.z = {k: 1, tx: 0, ty: 0}; } else {
    pl.z = {k, tx: cx - (cx - pl.z.tx) * f, ty: cy - (cy - pl.z.ty) * f};
  }
  place(pl);
}
function zoomBox(pl, a, b) {
  const w = Math.abs(b[0] - a[0]), h = Math.abs(b[1] - a[1]);
  if (w < 4 || h < 4) return;
  const f = Math.min(W / w, H / h), cx = (a[0] + b[0]) / 2, cy = (a[1] + b[1]) / 2;
  const k = Math.min(60, pl.z.k * f);
  const g = k / pl.z.k;
  pl.z = {k, tx: (pl.z.tx - cx) * g + W / 2, ty: (pl.z.ty - cy) * g + H / 2};
  place(pl);
}
function place(pl) {
  pl.circles.forEach((c, i) => { const [x, y] = screen(pl, i); c.setAttribute('cx', x.toFixed(1)); c.setAttribute('cy', y.toFixed(1)); });
  drawLinks(pl);
  pl.svg.dataset.zoom = pl.z.k.toFixed(3);
}

// -- drawing ----------------------------------------------------------------------------------------------
function colour(item) {
  const a = S.cb, v = valueOf(item, a);
  return v >= 0 ? [D().fills[a][v], D().strokes[a][v]] : ['#c7c7c7', '#777'];
}
function recolour() {
  for (const pl of S.plots) {
    pl.circles.forEach((c, i) => { const [f, s] = colour(pl.p.items[i]); c.setAttribute('fill', f); c.setAttribute('stroke', s); });
    legend(pl);
  }
  if (S.sel) showSelection(); else if (S.focus !== null) showFocus();
}
function legend(pl) {
  const a = S.cb, counts = new Map();
  for (const it of pl.p.items) { const v = valueOf(it, a); counts.set(v, (counts.get(v) || 0) + 1); }
  pl.legend.replaceChildren();
  const order = [...counts.keys()].sort((x, y) => x - y);
  for (const v of order) {
    const s = el('span', {'data-value': v >= 0 ? D().value_names[a][v] : 'unknown'});
    const i = el('i');
    i.style.background = v >= 0 ? D().fills[a][v] : '#c7c7c7';
    s.append(i, `${v >= 0 ? D().value_names[a][v] : 'unknown'} (${counts.get(v)})`);
    pl.legend.append(s);
  }
}
function drawPlot(p) {
  const box = el('div', {class: 'pf-e-plot', id: `scatter-${p.key}`, 'data-plot': p.key});
  box.append(el('div', {class: 'pf-e-title'}, p.title));
  const svg = el('svg:svg', {viewBox: `0 0 ${W} ${H}`, class: `pf-e-svg pf-m-${S.mode}`, role: 'img',
                             'aria-label': `${p.title}: ${p.items.length} points`, 'data-plot': p.key});
  const clip = `pf-clip-${p.key}`;
  const defs = el('svg:defs'), cp = el('svg:clipPath', {id: clip});
  cp.append(el('svg:rect', {x: 0, y: 0, width: W, height: H}));
  defs.append(cp);
  const g = el('svg:g', {'clip-path': `url(#${clip})`});
  const links = el('svg:g', {class: 'pf-e-links'}), pts = el('svg:g', {class: 'pf-e-pts'});
  g.append(links, pts);
  const band = el('svg:rect', {class: 'pf-e-band', visibility: 'hidden'});
  const lasso = el('svg:path', {class: 'pf-e-band', visibility: 'hidden'});
  svg.append(defs, el('svg:rect', {x: 0, y: 0, width: W, height: H, fill: '#fff', class: 'pf-e-bg'}), g, band, lasso);
  const pl = {p, box, svg, links, pts, band, lasso, circles: [], index: new Map(), z: {k: 1, tx: 0, ty: 0},
              legend: el('div', {class: 'pf-e-legend', 'aria-label': 'legend'})};
  p.items.forEach((it, i) => {
    const c = el('svg:circle', {r: R, 'data-item': it, 'data-plot': p.key, 'data-i': i});
    pl.circles.push(c); pl.index.set(it, i); pts.append(c);
  });
  box.append(svg, pl.legend);
  listen(pl);
  return pl;
}
function drawLinks(pl) {
  pl.links.replaceChildren();
  if (S.focus === null || S.sel) return;
  const i = pl.index.get(S.focus);
  if (i === undefined) return;
  const [x, y] = screen(pl, i);
  for (const j of pl.p.nn[i]) {
    const n = pl.index.get(j);
    if (n === undefined) continue;
    const [u, v] = screen(pl, n);
    pl.links.append(el('svg:line', {x1: x.toFixed(1), y1: y.toFixed(1), x2: u.toFixed(1), y2: v.toFixed(1)}));
  }
}
function toolbar() {
  const bar = el('div', {class: 'pf-e-bar', role: 'toolbar', 'aria-label': 'Explorer tools'});
  const lab = el('label', {class: 'pf-e-group'}, 'Colour by ');
  const sel = el('select', {class: 'pf-e-colour', 'aria-label': 'Colour by'});
  D().attributes.forEach((a, i) => {
    const o = el('option', {value: i}, `${a} · ${D().value_names[i].length} values` + (i === projected() ? ' (projected)' : ''));
    sel.append(o);
  });
  sel.value = String(S.cb);
  sel.addEventListener('change', () => { S.cb = parseInt(sel.value, 10); recolour(); });
  lab.append(sel);
  const modes = el('span', {class: 'pf-e-group', role: 'group', 'aria-label': 'Drag to'});
  for (const [m, t] of [['box', 'Box select'], ['lasso', 'Lasso select'], ['zoom', 'Zoom box'], ['pan', 'Pan']]) {
    const b = el('button', {type: 'button', 'data-mode': m, 'aria-pressed': String(S.mode === m)}, t);
    b.addEventListener('click', () => setMode(m));
    modes.append(b);
  }
  const acts = el('span', {class: 'pf-e-group'});
  for (const [a, t, l] of [['in', '+', 'Zoom in'], ['out', '−', 'Zoom out'], ['reset', 'Reset zoom', 'Reset zoom'],
                           ['clear', 'Clear', 'Clear the highlight and the selection']]) {
    const b = el('button', {type: 'button', 'data-act': a, 'aria-label': l, title: l}, t);
    b.addEventListener('click', () => act(a));
    acts.append(b);
  }
  bar.append(lab, modes, acts);
  return bar;
}
function setMode(m) {
  S.mode = m;
  root.querySelectorAll('[data-mode]').forEach(b => b.setAttribute('aria-pressed', String(b.dataset.mode === m)));
  for (const pl of S.plots) pl.svg.setAttribute('class', `pf-e-svg pf-m-${m}` + (pl.svg.classList.contains('pf-faded') ? ' pf-faded' : ''));
}
function act(a) {
  for (const pl of S.plots) {
    if (a === 'in') zoomAt(pl, 1.5, W / 2, H / 2);
    else if (a === 'out') zoomAt(pl, 1 / 1.5, W / 2, H / 2);
    else if (a === 'reset') { pl.z = {k: 1, tx: 0, ty: 0}; place(pl); }
  }
  if (a === 'clear') clearAll();
}
function render() {
  root.replaceChildren();
  S.plots = [];
  if (!D() || !D().plots || !D().plots.length) {
    root.append(el('div', {class: 'pf-e-hint'}, 'No projection yet: choose the models and press "Project the gallery" (or open this tab).'));
    return;
  }
  const plots = el('div', {class: 'pf-e-plots'});
  for (const p of D().plots) { const pl = drawPlot(p); S.plots.push(pl); plots.append(pl.box); }
  S.tip = el('div', {class: 'pf-e-tip', role: 'tooltip'});
  S.tip.style.display = 'none';
  S.info = el('div', {class: 'pf-e-info', 'aria-live': 'polite'});
  S.grid = el('div', {class: 'pf-e-grid', 'aria-label': 'selected items'});
  root.append(toolbar(), plots, S.info, S.grid, S.tip);
  S.plots.forEach(place);
  recolour();
  showHint();
}
function showHint() {
  S.info.textContent = 'Hover a point to see its image; click it to highlight its nearest neighbours in both plots; ' +
    'drag to select (box or lasso) and see the selection below.';
  S.grid.replaceChildren();
}

// -- state: focus (a clicked item), selection, hover ------------------------------------------------------------
function mark() {
  for (const pl of S.plots) {
    let fi = S.focus === null ? undefined : pl.index.get(S.focus);
    const nn = new Set(fi === undefined ? [] : pl.p.nn[fi]);
    const any = S.focus !== null || S.sel !== null;
    pl.svg.classList.toggle('pf-faded', any);
    const top = [];
    pl.circles.forEach((c, i) => {
      const it = pl.p.items[i];
      const f = it === S.focus, n = nn.has(it), s = S.sel !== null && S.sel.has(it);
      c.classList.toggle('pf-focus', f); c.classList.toggle('pf-nn', n); c.classList.toggle('pf-sel', s);
      c.classList.toggle('pf-on', f || n || s);
      if (f || n) top.push(c);
    });
    top.sort((a, b) => a.classList.contains('pf-focus') - b.classList.contains('pf-focus'));
    for (const c of top) pl.pts.append(c);  // drawn last: on top
    drawLinks(pl);
  }
}
function focusItem(item) {
  S.focus = item; S.sel = null;
  mark();
  showFocus();
}
function showFocus() {
  const a = projected(), name = D().attributes[a], parts = [];
  const mine = valueName(S.focus, a);
  for (const pl of S.plots) {
    const i = pl.index.get(S.focus);
    if (i === undefined) { parts.push(`${pl.p.label}: not among its plotted points`); continue; }
    const nn = pl.p.nn[i].filter(j => j >= 0);
    const same = nn.filter(j => valueName(j, a) === mine).length;
    const off = nn.filter(j => !pl.index.has(j)).length;
    parts.push(`${pl.p.label}: ${same}/${nn.length} share its ${name}` + (off ? ` (${off} not plotted)` : ''));
  }
  S.info.replaceChildren(el('b', {}, `Item #${S.focus}`), ` (${name}: ${mine}) and its ${D().k} nearest neighbours in each model's full space are highlighted. ` + parts.join('; ') + '.');
  S.grid.replaceChildren();
}
function selectItems(items, from) {
  S.focus = null;
  S.sel = new Set(items);
  S.selNote = from;
  mark();
  showSelection();
}
function showSelection() {
  const a = S.cb, name = D().attributes[a], items = [...S.sel];
  const counts = new Map();
  let unknown = 0;
  for (const it of items) { const v = valueOf(it, a); if (v < 0) unknown++; else counts.set(v, (counts.get(v) || 0) + 1); }
  const ranked = [...counts.entries()].sort((x, y) => y[1] - x[1]);
  const known = items.length - unknown;
  S.grid.replaceChildren();
  if (!items.length) { S.info.textContent = `No point in the ${S.selNote}: drag over some points.`; return; }
  const [mv, mc] = ranked[0] || [-1, 0];
  const purity = known ? 100 * mc / known : 0;
  const head = el('span', {class: 'pf-e-purity', 'data-purity': purity.toFixed(1)});
  head.append(el('b', {}, `${items.length} selected`), ` (${S.selNote}); most common ${name}: `,
              el('b', {}, mv >= 0 ? D().value_names[a][mv] : 'none'),
              `, purity `, el('b', {}, `${purity.toFixed(1)}%`), ` (${mc} of ${known}` +
              (unknown ? `, ${unknown} unknown)` : ')') + ' · ' +
              ranked.map(([v, c]) => `${D().value_names[a][v]} ${c}`).join(', '));
  S.info.replaceChildren(head);
  items.sort((x, y) => x - y).slice(0, GRID_MAX).forEach(it => {
    const v = valueOf(it, a);
    const card = el('button', {type: 'button', class: 'pf-e-card ' + (v === mv ? 'pf-major' : 'pf-minor'), 'data-item': it,
                               title: `item ${it}: ${name} = ${valueName(it, a)}; click to highlight its neighbours`});
    card.append(el('img', {src: url(it), alt: '', loading: 'lazy'}), el('span', {}, `#${it}`), el('span', {}, valueName(it, a)));
    card.addEventListener('click', () => { focusItem(it); trigger('click', {item: it}); });
    S.grid.append(card);
  });
  if (items.length > GRID_MAX) S.grid.append(el('div', {class: 'pf-e-more'}, `and ${items.length - GRID_MAX} more`));
}
function clearAll() {
  S.focus = null; S.sel = null;
  mark();
  showHint();
}
function hover(pl, c, e) {
  const it = parseInt(c.dataset.item, 10), a = projected();
  for (const q of S.plots) { const i = q.index.get(it); if (i !== undefined) q.circles[i].classList.add('pf-hov'); }
  const img = el('img', {src: url(it), alt: `item ${it}`});
  const txt = el('div');
  txt.append(el('b', {}, `Item #${it}`), el('br'), `${D().attributes[a]}: ${valueName(it, a)}`);
  if (S.cb !== a) { txt.append(el('br'), `${D().attributes[S.cb]}: ${valueName(it, S.cb)}`); }
  txt.append(el('br'), el('span', {class: 'pf-e-model'}, pl.p.label));
  S.tip.replaceChildren(img, txt);
  S.tip.style.display = 'flex';
  const r = root.getBoundingClientRect();
  let x = e.clientX - r.left + 14, y = e.clientY - r.top + 14;
  if (x + 300 > r.width) x = Math.max(0, e.clientX - r.left - 314);
  S.tip.style.left = `${x}px`; S.tip.style.top = `${y}px`;
}
function unhover() {
  root.querySelectorAll('circle.pf-hov').forEach(c => c.classList.remove('pf-hov'));
  if (S.tip) S.tip.style.display = 'none';
}

// -- pointer: click, drag (box, lasso, zoom box, pan), ctrl + wheel --------------------------------------------
function inside(poly, x, y) {
  let ok = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) ok = !ok;
  }
  return ok;
}
function listen(pl) {
  const svg = pl.svg;
  let st = null;
  svg.addEventListener('pointerover', (e) => { const c = e.target.closest('circle'); if (c && !st) hover(pl, c, e); });
  svg.addEventListener('pointerout', (e) => { if (e.target.closest('circle')) unhover(); });
  svg.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    const c = e.target.closest('circle');
    st = {start: svgPoint(pl, e), last: svgPoint(pl, e), c, moved: false, path: [svgPoint(pl, e)]};
  });
  svg.addEventListener('pointermove', (e) => {
    if (!st) return;
    const p = svgPoint(pl, e);
    if (!st.moved && Math.hypot(p[0] - st.start[0], p[1] - st.start[1]) < 4) return;
    if (!st.moved) { st.moved = true; unhover(); try { svg.setPointerCapture(e.pointerId); } catch (err) { /* synthetic */ } }
    if (S.mode === 'pan') {
      pl.z = {...pl.z, tx: pl.z.tx + p[0] - st.last[0], ty: pl.z.ty + p[1] - st.last[1]};
      place(pl);
    } else if (S.mode === 'lasso') {
      st.path.push(p);
      pl.lasso.setAttribute('d', 'M' + st.path.map(q => q[0].toFixed(1) + ',' + q[1].toFixed(1)).join('L') + 'Z');
      pl.lasso.setAttribute('visibility', 'visible');
    } else {
      const [x0, y0] = st.start;
      pl.band.setAttribute('x', Math.min(x0, p[0])); pl.band.setAttribute('y', Math.min(y0, p[1]));
      pl.band.setAttribute('width', Math.abs(p[0] - x0)); pl.band.setAttribute('height', Math.abs(p[1] - y0));
      pl.band.setAttribute('visibility', 'visible');
    }
    st.last = p;
  });
  const end = (e) => {
    if (!st) return;
    const s = st;
    st = null;
    pl.band.setAttribute('visibility', 'hidden'); pl.lasso.setAttribute('visibility', 'hidden');
    if (!s.moved) {
      if (s.c) { const it = parseInt(s.c.dataset.item, 10); focusItem(it); trigger('click', {item: it, plot: pl.p.key}); }
      else clearAll();
      return;
    }
    const p = svgPoint(pl, e);
    if (S.mode === 'zoom') { zoomBox(pl, s.start, p); return; }
    if (S.mode === 'pan') return;
    const picked = [];
    const x0 = Math.min(s.start[0], p[0]), x1 = Math.max(s.start[0], p[0]);
    const y0 = Math.min(s.start[1], p[1]), y1 = Math.max(s.start[1], p[1]);
    pl.p.items.forEach((it, i) => {
      const [x, y] = screen(pl, i);
      if (x < 0 || y < 0 || x > W || y > H) return;  // zoomed out of view
      if (S.mode === 'lasso' ? inside(s.path, x, y) : (x >= x0 && x <= x1 && y >= y0 && y <= y1)) picked.push(it);
    });
    selectItems(picked, `${S.mode === 'lasso' ? 'lasso' : 'box'} in ${pl.p.label}`);
  };
  svg.addEventListener('pointerup', end);
  svg.addEventListener('pointercancel', () => { st = null; pl.band.setAttribute('visibility', 'hidden'); pl.lasso.setAttribute('visibility', 'hidden'); });
  svg.addEventListener('wheel', (e) => {
    if (!(e.ctrlKey || e.metaKey)) return;
    e.preventDefault();
    const [x, y] = svgPoint(pl, e);
    zoomAt(pl, Math.exp(-e.deltaY * 0.002), x, y);
  }, {passive: false});
}

// -- the value: a new projection redraws; the neighbours panel asks for a focus ---------------------------------
function load() {
  let v = props.value;  // the data as JSON text (a dict costs Gradio a walk of every value); a dict still works
  if (typeof v === 'string') { try { v = v ? JSON.parse(v) : null; } catch (err) { v = null; } }
  const prev = S.data;
  S.data = v && typeof v === 'object' && Array.isArray(v.plots) ? v : null;
  S.focus = null; S.sel = null;
  if (S.data) {
    const keep = prev && prev.attribute === S.data.attribute && S.cb < S.data.attributes.length;
    if (!keep) S.cb = projected();
  }
  render();
}
watch('value', load);
load();
root.addEventListener('keydown', (e) => { if (e.key === 'Escape') clearAll(); });
if (window.__pfEmbFocus) window.removeEventListener('pf-emb-focus', window.__pfEmbFocus);
window.__pfEmbFocus = (e) => {
  const it = e.detail && e.detail.item;
  if (!root.isConnected || !D() || !Number.isInteger(it) || it === S.focus) return;
  if (S.plots.some(pl => pl.index.has(it))) focusItem(it);
};
window.addEventListener('pf-emb-focus', window.__pfEmbFocus);
"""

# The neighbours panel: a click on a neighbour (or on the pinned item) -> a "click" event with its item id, and the
# explorer highlights it at once; a new panel (a typed id, a click's answer) highlights the item it shows.
NEIGHBOUR_CLICK_JS = r"""
const focus = (item) => window.dispatchEvent(new CustomEvent('pf-emb-focus', {detail: {item}}));
element.addEventListener('click', (e) => {
  const b = e.target.closest('[data-item]');
  if (!b) return;
  const item = parseInt(b.dataset.item, 10);
  focus(item);
  trigger('click', {item});
});
watch('value', () => {
  const q = element.querySelector('.pf-query[data-item]');
  if (q) focus(parseInt(q.dataset.item, 10));
});
"""
