// Editor input: pointer, wheel, keys and buttons. Keys and buttons both run entries of the one
// action table (editor.js); pointer gestures edit the state directly and redraw.
function bindInput(el, S, R, table, hooks) {
  const { stage, svg, root } = R;

  // ------------------------------------------------------------ keys and buttons -> the action table
  // A key is written like the table writes it: 'a', 'ArrowRight', 'Shift+ArrowLeft', 'Ctrl+z',
  // 'Ctrl+Shift+z'. Shift is part of the name only for non-printing keys and with Ctrl
  // (a printing key already says it: '+' is Shift+'=').
  const byKey = new Map();
  for (const [name, a] of Object.entries(table)) for (const k of a.keys || []) byKey.set(k, name);
  const keyOf = (e) => {
    const ctrl = e.ctrlKey || e.metaKey, k = e.key;
    return (ctrl ? 'Ctrl+' : '') + (e.shiftKey && (ctrl || k.length > 1) ? 'Shift+' : '') + (ctrl ? k.toLowerCase() : k);
  };
  root.addEventListener('keydown', (e) => {
    if (e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') return;
    const name = byKey.get(keyOf(e));
    if (!name) return;
    e.preventDefault();
    table[name].run(e);
  });
  el.querySelectorAll('[data-act]').forEach((b) => b.addEventListener('click', () => { table[b.dataset.act].run(); root.focus(); }));

  // ------------------------------------------------------------ pointer: drag points, select, pan, draw a box
  let drag = null;
  stage.addEventListener('pointerdown', (e) => {
    if (!S.face) return;
    root.focus();
    const t = e.target, p = R.toImage(e);
    stage.setPointerCapture(e.pointerId);
    if (e.button === 1 || e.altKey) { drag = { kind: 'pan', sx: e.clientX, sy: e.clientY, vx: S.view.x, vy: S.view.y }; return; }
    if (S.mode === 'box') { drag = { kind: 'box', x0: p.x, y0: p.y, shown: false }; return; }
    if (t.classList && t.classList.contains('al-handle')) { S.push(); drag = { kind: 'corner', c: +t.dataset.c, moved: false }; return; }
    if (t.classList && t.classList.contains('al-pt')) {
      const i = +t.dataset.i;
      if (e.shiftKey) { S.toggleSel(i); R.draw(); return; }
      S.grab(i); S.push();
      drag = { kind: 'move', lx: p.x, ly: p.y, moved: false }; R.draw(); return;
    }
    drag = { kind: 'band', x0: p.x, y0: p.y, add: e.shiftKey, shown: false };
  });
  stage.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const p = R.toImage(e);
    if (drag.kind === 'pan') { S.view.x = drag.vx + e.clientX - drag.sx; S.view.y = drag.vy + e.clientY - drag.sy; R.applyView(); return; }
    if (drag.kind === 'move') {
      S.moveSel(p.x - drag.lx, p.y - drag.ly); drag.lx = p.x; drag.ly = p.y; drag.moved = true;
      R.draw(); return;
    }
    if (drag.kind === 'corner') { S.moveCorner(drag.c, p.x, p.y); drag.moved = true; R.draw(); return; }
    drag.x1 = p.x; drag.y1 = p.y; drag.shown = true;
    R.band(drag.kind, drag.x0, drag.y0, p.x, p.y);
  });
  stage.addEventListener('pointerup', async () => {
    const d = drag; drag = null;
    if (!d) return;
    if ((d.kind === 'move' || d.kind === 'corner') && !d.moved) S.dropLast();
    if (d.kind === 'corner' && d.moved) { S.tidyBox(); R.draw(); }
    if ((d.kind === 'move' || d.kind === 'corner') && d.moved) hooks.changed();
    if (d.kind === 'band') {
      if (!d.add) S.clearSel();
      if (d.shown) S.selectRect(d.x0, d.y0, d.x1, d.y1);
      R.draw();
    }
    if (d.kind === 'box' && d.shown) await hooks.boxDrawn([d.x0, d.y0, d.x1, d.y1]);
  });
  stage.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = stage.getBoundingClientRect();
    S.zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(-e.deltaY * 0.0015));
    R.applyView(); R.draw();
  }, { passive: false });

  // ------------------------------------------------------------ hover shows the point's index
  svg.addEventListener('pointerover', (e) => { if (e.target.classList.contains('al-pt')) R.hover(+e.target.dataset.i); });
  svg.addEventListener('pointerout', (e) => { if (e.target.classList.contains('al-pt')) R.hideHover(); });

  // ------------------------------------------------------------ filters, jump, group toggles
  el.querySelector('.al-status').addEventListener('change', hooks.filterChanged);
  el.querySelector('.al-folder').addEventListener('change', hooks.filterChanged);
  el.querySelector('.al-jump').addEventListener('keydown', async (e) => {
    if (e.key === 'Enter') { await hooks.jump(e.target.value); root.focus(); }
  });
  el.querySelector('.al-groups').addEventListener('change', (e) => {
    const g = e.target.dataset.group;
    if (!g) return;
    e.target.checked ? S.hidden.delete(g) : S.hidden.add(g);
    R.draw();
  });
  el.querySelector('.al-strip').addEventListener('click', (e) => {
    const b = e.target.closest('.al-thumb');
    if (b) hooks.jump('#' + b.dataset.position);
  });
  el.querySelectorAll('.al-look input').forEach((inp) => inp.addEventListener('input', () => {
    S.look[inp.dataset.look] = +inp.value; R.look();
  }));
  new ResizeObserver(() => { if (S.face) R.fit(); }).observe(stage);
}
