// Editor rendering: draws the state into the DOM (image, SVG overlay, counters, messages).
// Reads the state, never changes it, and binds no events (input lives in editor-input.js).
function createRenderer(el, S, cfg) {
  const NS = 'http://www.w3.org/2000/svg';
  const $ = (s) => el.querySelector(s);
  const stage = $('.al-stage'), canvas = $('.al-canvas'), img = $('.al-img'), svg = $('.al-svg');
  const R = { stage, svg, root: $('.al-root') };

  const add = (tag, attrs, parent = svg) => {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    parent.appendChild(e);
    return e;
  };
  const rect = ([x0, y0, x1, y1], attrs) => add('rect', { x: x0, y: y0, width: x1 - x0, height: y1 - y0, fill: 'none', ...attrs });

  R.msg = (t, err) => { const m = $('.al-msg'); m.textContent = t; m.classList.toggle('err', !!err); };

  let band = null;  // the rectangle being dragged (selection band or a new face box)
  R.draw = () => {
    svg.innerHTML = ''; band = null;
    const f = S.face;
    if (!f) return;
    svg.setAttribute('viewBox', `0 0 ${f.width} ${f.height}`);
    svg.setAttribute('width', f.width); svg.setAttribute('height', f.height);
    const r = Math.max(1.5, Math.min(f.width, f.height) / 300) / Math.sqrt(S.view.s);
    const sw = r * 0.6;
    if (f.box) rect(f.box, { stroke: '#ffe066', 'stroke-width': sw, 'stroke-dasharray': `${4 * sw} ${3 * sw}` });
    for (const x of S.extra) rect(x.box, { stroke: '#66d9ff', 'stroke-width': sw });
    const pts = S.pts;
    if (!pts.length) return;
    for (const [i, j, g] of cfg.edges) {
      if (S.hidden.has(g)) continue;
      add('line', { x1: pts[i][0], y1: pts[i][1], x2: pts[j][0], y2: pts[j][1], stroke: cfg.colors[g], 'stroke-width': sw, opacity: 0.85 });
    }
    pts.forEach((p, i) => {
      if (!S.visible(i)) return;
      const on = S.sel.has(i);
      add('circle', { cx: p[0], cy: p[1], r: on ? r * 1.5 : r, fill: cfg.colors[S.groupOf(i)], class: 'al-pt' + (on ? ' sel' : ''), 'stroke-width': sw, 'data-i': i });
    });
  };

  R.band = (kind, x0, y0, x1, y1) => {
    if (!band) band = add('rect', {});
    const attrs = { x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0), height: Math.abs(y1 - y0),
      fill: kind === 'box' ? 'rgba(102,217,255,.15)' : 'rgba(255,255,255,.1)', stroke: '#fff', 'stroke-width': 1 / S.view.s, 'stroke-dasharray': '4 3' };
    for (const k in attrs) band.setAttribute(k, attrs[k]);
  };

  R.hover = (i) => {
    const p = S.pts[i], h = $('.al-hover'), sr = stage.getBoundingClientRect();
    const q = new DOMPoint(p[0], p[1]).matrixTransform(svg.getScreenCTM());
    h.textContent = `${i} · ${S.groupOf(i)} · (${p[0].toFixed(1)}, ${p[1].toFixed(1)})`;
    h.style.left = (q.x - sr.left + 10) + 'px'; h.style.top = (q.y - sr.top - 24) + 'px'; h.style.display = 'block';
  };
  R.hideHover = () => { $('.al-hover').style.display = 'none'; };

  R.applyView = () => { const v = S.view; canvas.style.transform = `translate(${v.x}px, ${v.y}px) scale(${v.s})`; };
  R.fit = () => { if (!S.face) return; S.fitView(stage.clientWidth, stage.clientHeight); R.applyView(); R.draw(); };
  R.toImage = (e) => new DOMPoint(e.clientX, e.clientY).matrixTransform(svg.getScreenCTM().inverse());

  R.showImage = async (p) => {
    await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = p.image; });
    img.width = p.width; img.height = p.height;
  };
  R.blank = (counts, message) => {
    img.removeAttribute('src'); svg.innerHTML = ''; R.msg(message);
    $('.al-count').textContent = `reviewed ${counts.reviewed} / ${counts.total}`;
  };
  R.count = () => {
    const f = S.face;
    if (!f) return;
    $('.al-count').textContent = `${f.position ?? '–'} / ${f.in_view} in view · reviewed ${f.counts.reviewed} / ${f.counts.total}`;
  };
  R.faceLine = () => {
    const p = S.face;
    R.msg(`${p.image_name}  face ${p.face_index >= 0 ? p.face_index : '(none detected)'}  ·  status ${p.status}` +
      (p.confidence != null ? `  ·  uncertainty ${p.confidence.toFixed(3)}` : '') + (p.end ? '  ·  end of view' : ''));
  };
  R.mark = (data) => Object.assign(R.root.dataset, data);  // data-* the tests and the page read
  R.mode = () => {
    $('[data-act="addface"]').classList.toggle('al-on', S.mode === 'box');
    R.msg(S.mode === 'box' ? 'drag a box around the missed face' : '');
  };

  // ------------------------------------------------------------ controls built once
  R.options = (selectEl, values) => { for (const v of values) if (v) selectEl.add(new Option(v, v)); };
  R.groupToggles = () => {
    const box = $('.al-groups');
    for (const [g] of cfg.groups) {
      const l = document.createElement('label');
      l.innerHTML = `<input type="checkbox" checked data-group="${g}"><i style="background:${cfg.colors[g]}"></i>${g.replace('_', ' ')}`;
      box.appendChild(l);
    }
  };
  R.help = (table) => {  // the key list comes from the same table the keys are dispatched from
    const keys = Object.values(table).filter((a) => a.keys && a.help).map((a) => `${a.keys.map(keyName).join(' / ')} ${a.help}`);
    $('.al-keys').textContent = 'Keys: ' + keys.join(' · ') + '.';
  };
  const keyName = (k) => ({ ArrowRight: '→', ArrowLeft: '←', ArrowUp: '↑', ArrowDown: '↓', Escape: 'Esc' }[k] ||
    k.replace(/Arrow(Right|Left|Up|Down)/, (_, d) => ({ Right: '→', Left: '←', Up: '↑', Down: '↓' }[d])).replace(/(^|\+)([a-z])$/, (_, a, c) => a + c.toUpperCase()));
  return R;
}
