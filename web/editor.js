// autolabel point editor. Runs inside gr.HTML's js_on_load with `element` and `server`.
// It only moves points and sends 68 [x, y] pairs back; all logic lives in Python.
// Server calls: info, first, step, jump, act, add_face (see autolabel/review/session.py).
(async () => {
  const $ = (s) => element.querySelector(s);
  const root = $('.al-root'), stage = $('.al-stage'), canvas = $('.al-canvas'), img = $('.al-img'), svg = $('.al-svg');
  const NS = 'http://www.w3.org/2000/svg';
  const CFG = JSON.parse(element.querySelector('.al-config')?.textContent || '{}');
  const GROUPS = CFG.groups, COLORS = CFG.colors, EDGES = CFG.edges;
  let face = null;          // payload from the server
  let pts = [];             // current points [[x, y] x 68]
  let loaded = '';          // JSON of the points as loaded (to tell edits)
  let sel = new Set();      // selected point indices
  let undo = [], redo = [];
  let view = { s: 1, x: 0, y: 0 };
  let hidden = new Set();
  let mode = 'edit';        // 'edit' | 'box'
  let extra = [];           // faces added on this image
  const filt = () => ({ status: $('.al-status').value || 'todo', folder: $('.al-folder').value || '' });
  const msg = (t, err) => { const m = $('.al-msg'); m.textContent = t; m.classList.toggle('err', !!err); };
  window.__autolabel = { get face() { return face; }, get points() { return pts; }, get view() { return view; } };

  // ---------------------------------------------------------------- drawing
  function groupOf(i) { for (const [g, a, b] of GROUPS) if (i >= a && i <= b) return g; return ''; }
  function draw() {
    svg.innerHTML = '';
    if (!face) return;
    svg.setAttribute('viewBox', `0 0 ${face.width} ${face.height}`);
    svg.setAttribute('width', face.width); svg.setAttribute('height', face.height);
    const r = Math.max(1.5, Math.min(face.width, face.height) / 300) / Math.sqrt(view.s);
    const sw = r * 0.6;
    const add = (tag, attrs) => { const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); svg.appendChild(e); return e; };
    if (face.box) { const [x0, y0, x1, y1] = face.box; add('rect', { x: x0, y: y0, width: x1 - x0, height: y1 - y0, fill: 'none', stroke: '#ffe066', 'stroke-width': sw, 'stroke-dasharray': `${4 * sw} ${3 * sw}` }); }
    for (const f of extra) { const [x0, y0, x1, y1] = f.box; add('rect', { x: x0, y: y0, width: x1 - x0, height: y1 - y0, fill: 'none', stroke: '#66d9ff', 'stroke-width': sw }); }
    if (!pts.length) return;
    for (const [i, j, g] of EDGES) {
      if (hidden.has(g)) continue;
      add('line', { x1: pts[i][0], y1: pts[i][1], x2: pts[j][0], y2: pts[j][1], stroke: COLORS[g], 'stroke-width': sw, opacity: 0.85 });
    }
    pts.forEach((p, i) => {
      const g = groupOf(i);
      if (hidden.has(g)) return;
      const c = add('circle', { cx: p[0], cy: p[1], r: sel.has(i) ? r * 1.5 : r, fill: COLORS[g], class: 'al-pt' + (sel.has(i) ? ' sel' : ''), 'stroke-width': sw, 'data-i': i });
      c.addEventListener('pointerenter', () => hover(i, p));
      c.addEventListener('pointerleave', () => { $('.al-hover').style.display = 'none'; });
    });
  }
  function hover(i, p) {
    const h = $('.al-hover'), sr = stage.getBoundingClientRect(), cm = svg.getScreenCTM();
    const q = new DOMPoint(p[0], p[1]).matrixTransform(cm);
    h.textContent = `${i} · ${groupOf(i)} · (${p[0].toFixed(1)}, ${p[1].toFixed(1)})`;
    h.style.left = (q.x - sr.left + 10) + 'px'; h.style.top = (q.y - sr.top - 24) + 'px'; h.style.display = 'block';
  }
  function applyView() { canvas.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.s})`; }
  function fit() {
    if (!face) return;
    const W = stage.clientWidth, H = stage.clientHeight;
    // show the face box (or the whole image) filling the stage
    let [x0, y0, x1, y1] = face.box || [0, 0, face.width, face.height];
    const pad = 0.6 * Math.max(x1 - x0, y1 - y0);
    x0 -= pad; y0 -= pad; x1 += pad; y1 += pad;
    const s = Math.min(W / (x1 - x0), H / (y1 - y0), 8);
    view = { s, x: W / 2 - s * (x0 + x1) / 2, y: H / 2 - s * (y0 + y1) / 2 };
    applyView(); draw();
  }
  function updateCount() {
    if (!face) return;
    const c = face.counts;
    $('.al-count').textContent = `${face.position ?? '–'} / ${face.in_view} in view · reviewed ${c.reviewed} / ${c.total}`;
  }

  // ---------------------------------------------------------------- loading faces
  async function show(p) {
    if (!p) return;
    if (p.error) { msg(p.error, true); return; }
    if (p.empty) { face = null; pts = []; img.removeAttribute('src'); svg.innerHTML = ''; msg(p.message); $('.al-count').textContent = `reviewed ${p.counts.reviewed} / ${p.counts.total}`; return; }
    face = p; extra = p.extra_faces || [];
    pts = p.points ? p.points.map((q) => q.slice()) : [];
    loaded = JSON.stringify(pts); undo = []; redo = []; sel.clear();
    await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = p.image; });
    img.width = p.width; img.height = p.height;
    fit(); updateCount();
    msg(`${p.image_name}  face ${p.face_index >= 0 ? p.face_index : '(none detected)'}  ·  status ${p.status}` +
        (p.confidence != null ? `  ·  uncertainty ${p.confidence.toFixed(3)}` : '') + (p.end ? '  ·  end of view' : ''));
    root.dataset.key = p.key; root.dataset.rev = p.rev; root.dataset.status = p.status;
  }
  const call = async (fn, ...args) => { try { return await server[fn](...args); } catch (e) { msg(`server error: ${e}`, true); return null; } };
  const go = async (dir) => { if (!face) return show(await call('first', filt().status, filt().folder)); show(await call('step', face.row, dir, filt().status, filt().folder)); };

  async function act(status) {
    if (!face || !pts.length) { msg('nothing to save here (draw a box with B to add a face)', true); return; }
    const edited = JSON.stringify(pts) !== loaded;
    if (status === 'accepted' && edited) status = 'corrected';
    const res = await call('act', face.key, status, pts, face.rev);
    if (!res) return;
    if (!res.ok) { msg(res.message, true); return; }
    root.dataset.rev = res.rev; root.dataset.status = status;
    msg(res.message);
    const row = face.row;
    show(await call('step', row, 1, filt().status, filt().folder));
  }

  // ---------------------------------------------------------------- editing
  function push() { undo.push(JSON.stringify(pts)); if (undo.length > 200) undo.shift(); redo = []; }
  function toImg(e) { return new DOMPoint(e.clientX, e.clientY).matrixTransform(svg.getScreenCTM().inverse()); }
  function transformSel(fn) {
    const ids = sel.size ? [...sel] : pts.map((_, i) => i);
    const cx = ids.reduce((a, i) => a + pts[i][0], 0) / ids.length, cy = ids.reduce((a, i) => a + pts[i][1], 0) / ids.length;
    push(); for (const i of ids) pts[i] = fn(pts[i][0] - cx, pts[i][1] - cy, cx, cy); draw();
  }
  const rotate = (deg) => { const a = deg * Math.PI / 180, c = Math.cos(a), s = Math.sin(a); transformSel((dx, dy, cx, cy) => [cx + c * dx - s * dy, cy + s * dx + c * dy]); };
  const scale = (k) => transformSel((dx, dy, cx, cy) => [cx + k * dx, cy + k * dy]);
  const nudge = (ox, oy) => transformSel((dx, dy, cx, cy) => [cx + dx + ox, cy + dy + oy]);

  let drag = null;
  stage.addEventListener('pointerdown', (e) => {
    if (!face) return;
    root.focus();
    const t = e.target, p = toImg(e);
    stage.setPointerCapture(e.pointerId);
    if (e.button === 1 || e.altKey) { drag = { kind: 'pan', sx: e.clientX, sy: e.clientY, vx: view.x, vy: view.y }; return; }
    if (mode === 'box') { drag = { kind: 'box', x0: p.x, y0: p.y, rect: null }; return; }
    if (t.classList && t.classList.contains('al-pt')) {
      const i = +t.dataset.i;
      if (e.shiftKey) { sel.has(i) ? sel.delete(i) : sel.add(i); draw(); return; }
      if (!sel.has(i)) { sel = new Set([i]); }
      push(); drag = { kind: 'move', lx: p.x, ly: p.y, moved: false }; draw(); return;
    }
    drag = { kind: 'band', x0: p.x, y0: p.y, add: e.shiftKey, rect: null };
  });
  stage.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const p = toImg(e);
    if (drag.kind === 'pan') { view.x = drag.vx + e.clientX - drag.sx; view.y = drag.vy + e.clientY - drag.sy; applyView(); return; }
    if (drag.kind === 'move') {
      const dx = p.x - drag.lx, dy = p.y - drag.ly; drag.lx = p.x; drag.ly = p.y; drag.moved = true;
      for (const i of sel) { pts[i][0] += dx; pts[i][1] += dy; }
      draw(); return;
    }
    const x = Math.min(drag.x0, p.x), y = Math.min(drag.y0, p.y), w = Math.abs(p.x - drag.x0), h = Math.abs(p.y - drag.y0);
    drag.x1 = p.x; drag.y1 = p.y;
    if (!drag.rect) { drag.rect = document.createElementNS(NS, 'rect'); svg.appendChild(drag.rect); }
    Object.entries({ x, y, width: w, height: h, fill: drag.kind === 'box' ? 'rgba(102,217,255,.15)' : 'rgba(255,255,255,.1)', stroke: '#fff', 'stroke-width': 1 / view.s, 'stroke-dasharray': '4 3' })
      .forEach(([k, v]) => drag.rect.setAttribute(k, v));
  });
  stage.addEventListener('pointerup', async () => {
    const d = drag; drag = null;
    if (!d) return;
    if (d.kind === 'move' && !d.moved) undo.pop();
    if (d.kind === 'band') {
      if (!d.add) sel.clear();
      if (d.rect) {
        const [x0, x1] = [Math.min(d.x0, d.x1), Math.max(d.x0, d.x1)], [y0, y1] = [Math.min(d.y0, d.y1), Math.max(d.y0, d.y1)];
        pts.forEach((p, i) => { if (!hidden.has(groupOf(i)) && p[0] >= x0 && p[0] <= x1 && p[1] >= y0 && p[1] <= y1) sel.add(i); });
      }
      draw();
    }
    if (d.kind === 'box' && d.rect) {
      setMode('edit');
      const res = await call('add_face', face.row, [d.x0, d.y0, d.x1, d.y1]);
      if (!res || !res.ok) { msg(res ? res.message : 'failed', true); draw(); return; }
      face = { ...face, key: res.key, rev: 0, status: 'todo', box: res.box, points: res.points, face_index: -1 };
      pts = res.points.map((q) => q.slice()); loaded = ''; undo = []; redo = []; sel.clear();
      root.dataset.key = res.key; root.dataset.rev = 0;
      draw(); msg(res.message);
    }
  });
  stage.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = stage.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
    const k = Math.exp(-e.deltaY * 0.0015), s = Math.min(Math.max(view.s * k, 0.05), 40);
    view.x = mx - (mx - view.x) * s / view.s; view.y = my - (my - view.y) * s / view.s; view.s = s;
    applyView(); draw();
  }, { passive: false });
  function setMode(m) { mode = m; $('[data-act="addface"]').classList.toggle('al-on', m === 'box'); msg(m === 'box' ? 'drag a box around the missed face' : ''); }
  function doUndo() { if (!undo.length) return; redo.push(JSON.stringify(pts)); pts = JSON.parse(undo.pop()); draw(); }
  function doRedo() { if (!redo.length) return; undo.push(JSON.stringify(pts)); pts = JSON.parse(redo.pop()); draw(); }

  const actions = {
    prev: () => go(-1), next: () => go(1), accept: () => act('accepted'), save: () => act('corrected'),
    reject: () => act('rejected'), skip: () => act('skipped'), undo: doUndo, redo: doRedo, zoom: fit,
    addface: () => setMode(mode === 'box' ? 'edit' : 'box'),
  };
  element.querySelectorAll('[data-act]').forEach((b) => b.addEventListener('click', () => { actions[b.dataset.act](); root.focus(); }));
  root.addEventListener('keydown', (e) => {
    if (e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') return;
    const k = e.key, ctrl = e.ctrlKey || e.metaKey;
    const step = e.shiftKey ? 1 : 0;
    let done = true;
    if (ctrl && k.toLowerCase() === 'z') (e.shiftKey ? doRedo : doUndo)();
    else if (ctrl && k.toLowerCase() === 'y') doRedo();
    else if (ctrl && k.toLowerCase() === 'a') { sel = new Set(pts.map((_, i) => i)); draw(); }
    else if (ctrl) done = false;
    else if (step && k.startsWith('Arrow')) nudge(k === 'ArrowLeft' ? -1 : k === 'ArrowRight' ? 1 : 0, k === 'ArrowUp' ? -1 : k === 'ArrowDown' ? 1 : 0);
    else if (k === 'ArrowRight' || k === 'n') go(1);
    else if (k === 'ArrowLeft' || k === 'p') go(-1);
    else if (k === 'a') act('accepted');
    else if (k === 's') act('corrected');
    else if (k === 'r') act('rejected');
    else if (k === 'k') act('skipped');
    else if (k === '0') fit();
    else if (k === 'Escape') { sel.clear(); setMode('edit'); draw(); }
    else if (k === '[') rotate(-2);
    else if (k === ']') rotate(2);
    else if (k === '-') scale(1 / 1.03);
    else if (k === '=' || k === '+') scale(1.03);
    else if (k === 'b') setMode(mode === 'box' ? 'edit' : 'box');
    else done = false;
    if (done) e.preventDefault();
  });

  // ---------------------------------------------------------------- filters, groups, start
  const info = await call('info');
  const sSel = $('.al-status'), fSel = $('.al-folder');
  for (const s of info.statuses) sSel.add(new Option(s, s));
  for (const f of info.folders) if (f) fSel.add(new Option(f, f));
  sSel.addEventListener('change', async () => show(await call('first', filt().status, filt().folder)));
  fSel.addEventListener('change', async () => show(await call('first', filt().status, filt().folder)));
  $('.al-jump').addEventListener('keydown', async (e) => { if (e.key === 'Enter') { show(await call('jump', e.target.value, filt().status, filt().folder)); root.focus(); } });
  const gbox = $('.al-groups');
  for (const [g] of GROUPS) {
    const l = document.createElement('label');
    l.innerHTML = `<input type="checkbox" checked><i style="background:${COLORS[g]}"></i>${g.replace('_', ' ')}`;
    l.querySelector('input').addEventListener('change', (e) => { e.target.checked ? hidden.delete(g) : hidden.add(g); draw(); });
    gbox.appendChild(l);
  }
  new ResizeObserver(() => { if (face) fit(); }).observe(stage);
  await show(await call('first', 'todo', ''));
  root.dataset.ready = '1';
  root.focus();
})();
