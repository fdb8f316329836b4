// Editor rendering: draws the state into the DOM (image, SVG overlay, counters, messages, strip).
// Reads the state, never changes it, and binds no events (input lives in editor-input.js).
function createRenderer(el, S, cfg) {
  const NS = 'http://www.w3.org/2000/svg';
  const $ = (s) => el.querySelector(s);
  const stage = $('.al-stage'), canvas = $('.al-canvas'), img = $('.al-img'), svg = $('.al-svg');
  const R = { stage, svg, root: $('.al-root') };
  // Sizes on screen (CSS pixels), whatever the zoom: divided by view.s to draw in image pixels.
  const DOT = 5, REF_DOT = 3, LINE = 1.5, HANDLE = 5;

  const add = (tag, attrs, parent = svg) => {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    parent.appendChild(e);
    return e;
  };
  const rect = ([x0, y0, x1, y1], attrs, parent) =>
    add('rect', { x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0), height: Math.abs(y1 - y0), fill: 'none', ...attrs }, parent);

  R.msg = (t, err) => { const m = $('.al-msg'); m.textContent = t; m.classList.toggle('err', !!err); };

  // One shape: edges and dots. The edited shape and reference shapes (the model's points, the
  // other tab's version, an audit's second shape) all go through here.
  function shape(points, { parent, px, color, dot, dash, classes, occ, sel }) {
    for (const [i, j, g] of cfg.edges) {
      if (S.hidden.has(g)) continue;
      add('line', { x1: points[i][0], y1: points[i][1], x2: points[j][0], y2: points[j][1], stroke: color || cfg.colors[g],
        'stroke-width': LINE * px, opacity: 0.85, ...(dash ? { 'stroke-dasharray': `${3 * px} ${3 * px}` } : {}) }, parent);
    }
    points.forEach((p, i) => {
      if (!S.visible(i)) return;
      const c = color || cfg.colors[S.groupOf(i)], on = sel && sel.has(i), hollow = dash || (occ && occ.has(i));
      add('circle', { cx: p[0], cy: p[1], r: (on ? 1.4 : 1) * dot * px, fill: hollow ? 'none' : c, ...(hollow ? { stroke: c } : {}),
        class: classes + (on ? ' sel' : '') + (occ && occ.has(i) ? ' occ' : ''), 'stroke-width': LINE * px, 'data-i': i }, parent);
    });
  }

  let band = null;  // the rectangle being dragged (selection band or a new face box)
  R.draw = () => {
    svg.innerHTML = ''; band = null;
    const f = S.face;
    if (!f) return;
    svg.setAttribute('viewBox', `0 0 ${f.width} ${f.height}`);
    svg.setAttribute('width', f.width); svg.setAttribute('height', f.height);
    const px = 1 / S.view.s;  // one screen pixel in image pixels
    for (const x of S.extra) rect(x.box, { stroke: '#66d9ff', 'stroke-width': LINE * px });
    if (S.box) {
      const g = add('g', { class: 'al-box' });
      rect(S.box, { stroke: '#ffe066', 'stroke-width': LINE * px, 'stroke-dasharray': `${6 * px} ${4 * px}` }, g);
      const [x0, y0, x1, y1] = S.box;
      [[x0, y0], [x1, y0], [x1, y1], [x0, y1]].forEach(([x, y], c) =>
        add('rect', { x: x - HANDLE * px, y: y - HANDLE * px, width: 2 * HANDLE * px, height: 2 * HANDLE * px, class: 'al-handle', 'data-c': c,
          fill: '#ffe066', stroke: '#222', 'stroke-width': px }, g));
    }
    if (S.pts.length) {
      // points the model is unsure of: a ring of twice their predicted error scale (at least a few screen pixels)
      const unc = f.point_uncertainty || [];
      for (const i of f.uncertain_points || []) {
        if (!S.visible(i) || !S.pts[i]) continue;
        add('circle', { cx: S.pts[i][0], cy: S.pts[i][1], r: Math.max(2 * unc[i], 2.5 * DOT * px), fill: 'none', stroke: '#ff5c5c',
          'stroke-width': LINE * px, 'stroke-dasharray': `${2 * px} ${2 * px}`, class: 'al-unc', 'data-i': i });
      }
      shape(S.pts, { parent: svg, px, dot: DOT, classes: 'al-pt', occ: S.occ, sel: S.sel });
    }
    for (const ref of S.refs()) {  // on top, hollow and dashed; they let the pointer through (CSS)
      const g = add('g', { class: 'al-ref', 'data-ref': ref.name });
      shape(ref.points, { parent: g, px, color: ref.color || '#fff', dot: REF_DOT, dash: true, classes: 'al-ref-pt' });
    }
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
    h.textContent = `${i} · ${S.groupOf(i)} · (${p[0].toFixed(1)}, ${p[1].toFixed(1)})` + (S.occ.has(i) ? ' · occluded' : '');
    h.style.left = (q.x - sr.left + 10) + 'px'; h.style.top = (q.y - sr.top - 24) + 'px'; h.style.display = 'block';
  };
  R.hideHover = () => { $('.al-hover').style.display = 'none'; };

  R.applyView = () => { const v = S.view; canvas.style.transform = `translate(${v.x}px, ${v.y}px) scale(${v.s})`; };
  R.fit = () => { if (!S.face) return; S.fitView(stage.clientWidth, stage.clientHeight); R.applyView(); R.draw(); };
  R.toImage = (e) => new DOMPoint(e.clientX, e.clientY).matrixTransform(svg.getScreenCTM().inverse());
  R.look = () => { img.style.filter = `brightness(${S.look.brightness}%) contrast(${S.look.contrast}%)`; };

  R.showImage = async (p) => {
    await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = p.image; });
    img.width = p.width; img.height = p.height;
  };
  R.blank = (counts, message) => {
    img.removeAttribute('src'); svg.innerHTML = ''; R.msg(message); R.conflict();
    $('.al-count').textContent = `reviewed ${counts.reviewed} / ${counts.total}`;
  };
  R.count = () => {
    const f = S.face;
    if (!f) return;
    $('.al-count').textContent = `${f.position ?? '–'} / ${f.in_view} · reviewed ${f.counts.reviewed} / ${f.counts.total}`;
  };
  R.faceLine = () => {
    const p = S.face;
    R.msg(`${p.image_name}  face ${p.face_index >= 0 ? p.face_index : '(none detected)'}  ·  status ${p.status}` +
      (p.confidence != null ? `  ·  uncertainty ${p.confidence.toFixed(3)}` : '') +
      ((p.uncertain_points || []).length ? `  ·  ${p.uncertain_points.length} uncertain points ringed` : '') +
      (p.audit ? '  ·  audit: dashed = the model\'s shape (O hides it)' : '') + (p.end ? '  ·  end of view' : '') +
      (p.draft ? '  ·  your unsaved edits from earlier are restored (S saves, M resets to the model)' : ''));
  };
  R.mark = (data) => Object.assign(R.root.dataset, data);  // data-* the tests and the page read
  R.toggles = () => {
    $('[data-act="addface"]').classList.toggle('al-on', S.mode === 'box');
    $('[data-act="overlay"]').classList.toggle('al-on', S.overlay);
  };
  R.mode = () => { R.toggles(); R.msg(S.mode === 'box' ? 'drag a box around the missed face' : ''); };
  R.conflict = () => {  // the bar that lets the person keep their edit or take the other version
    const bar = $('.al-conflict'), t = S.theirs;
    bar.hidden = !t;
    if (t) {
      bar.querySelector('.al-conflict-text').textContent = `Saved elsewhere${t.user ? ' by ' + t.user : ''} as ${t.status} ` +
        `(revision ${t.rev}), drawn in orange. Keep your edit (overwrites theirs) or take theirs?`;
    }
  };

  // ------------------------------------------------------------ thumbnail strip of the queue
  R.strip = (items) => {
    const box = $('.al-strip');
    box.innerHTML = '';
    for (const it of items || []) {
      const b = document.createElement('button');
      b.className = 'al-thumb' + (S.face && it.key === S.face.key ? ' al-here' : '') + ` st-${it.status}`;
      b.dataset.position = it.position; b.title = `#${it.position} ${it.key} · ${it.status}`;
      if (it.thumb) { const im = document.createElement('img'); im.src = it.thumb; im.alt = ''; b.appendChild(im); }
      const n = document.createElement('span'); n.textContent = it.position; b.appendChild(n);
      box.appendChild(b);
    }
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
    el.querySelectorAll('[data-act]').forEach((b) => {  // tooltips name the key
      const a = table[b.dataset.act];
      if (a && a.keys && a.help && !b.title) b.title = `${a.help} (${a.keys.map(keyName).join(' / ')})`;
    });
  };
  const keyName = (k) => ({ ArrowRight: '→', ArrowLeft: '←', ArrowUp: '↑', ArrowDown: '↓', Escape: 'Esc' }[k] ||
    k.replace(/Arrow(Right|Left|Up|Down)/, (_, d) => ({ Right: '→', Left: '←', Up: '↑', Down: '↓' }[d])).replace(/(^|\+)([a-z])$/, (_, a, c) => a + c.toUpperCase()));
  return R;
}
