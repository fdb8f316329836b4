// autolabel point editor. Runs inside gr.HTML's js_on_load with `element` and `server`, after
// editor-state.js (createState), editor-render.js (createRenderer) and editor-input.js (bindInput),
// which autolabel/review/app.py puts before this file.
// It only moves points and sends 68 [x, y] pairs (with occluded flags and the box) back; all
// logic lives in Python. Server calls: info, first, step, jump, act, add_face, draft, strip
// (see autolabel/review/session.py).
(async () => {
  const CFG = JSON.parse(element.querySelector('.al-config')?.textContent || '{}');
  const S = createState(CFG), R = createRenderer(element, S, CFG);
  const $ = (s) => element.querySelector(s);
  window.__autolabel = {
    get face() { return S.face; }, get points() { return S.pts; }, get view() { return S.view; },
    get occluded() { return S.flags(); }, get box() { return S.box; }, get theirs() { return S.theirs; }, state: S, render: R,
  };

  // ------------------------------------------------------------ talking to the server
  const filt = () => ({ status: $('.al-status').value || 'todo', folder: $('.al-folder').value || '' });
  const call = async (fn, ...args) => {
    try { return await server[fn](...args); } catch (e) { R.msg(`server error: ${e}`, true); return null; }
  };
  const extras = () => ({ occluded: S.flags(), box: S.box });

  // Unsaved edits are kept on the server as a draft per face (journaled), written a moment after
  // each edit and before leaving the face, so → then ← (or a closed tab) finds them again.
  let draftTimer = null, draftKeys = new Set();
  const changed = () => { clearTimeout(draftTimer); draftTimer = setTimeout(saveDraft, 500); };
  async function saveDraft() {
    clearTimeout(draftTimer); draftTimer = null;
    const f = S.face;
    if (!f || !S.pts.length) return;
    if (S.edited()) { draftKeys.add(f.key); await call('draft', f.key, f.rev, S.pts, extras()); }
    else if (draftKeys.has(f.key) || f.draft) { draftKeys.delete(f.key); await call('draft', f.key, f.rev, null, {}); }
  }
  const leave = async () => { if (draftTimer || (S.face && S.edited())) await saveDraft(); };

  async function show(p) {
    if (!p) return;
    if (p.error) { R.msg(p.error, true); return; }
    if (p.empty) { S.clear(); R.blank(p.counts, p.message); R.strip([]); return; }
    S.load(p);
    if (p.draft) draftKeys.add(p.key);
    await R.showImage(p);
    R.fit(); R.count(); R.faceLine(); R.conflict();
    R.mark({ key: p.key, rev: S.face.rev, status: p.status });
    loadStrip();
  }
  async function loadStrip() {
    const row = S.face.row, res = await call('strip', row, filt().status, filt().folder);
    if (res && S.face && S.face.row === row) R.strip(res.items);
  }
  const open = async (fn, ...args) => { await leave(); return show(await call(fn, ...args)); };
  const first = () => open('first', filt().status, filt().folder);
  const go = (dir) => (S.face ? open('step', S.face.row, dir, filt().status, filt().folder) : first());
  let pending = null;  // the status a save was for, while a conflict waits for the person's choice
  async function act(status) {
    if (!S.face || !S.pts.length) { R.msg('nothing to save here (draw a box with B to add a face)', true); return; }
    if (status === 'accepted' && S.edited()) status = 'corrected';
    clearTimeout(draftTimer); draftTimer = null;
    const res = await call('act', S.face.key, status, S.pts, S.face.rev, extras());
    if (!res) return;
    if (res.conflict && res.theirs) {
      pending = status; S.theirs = res.theirs;
      R.conflict(); R.draw(); R.msg('saved elsewhere meanwhile: keep your edit or take theirs (bar above the image)', true);
      return;
    }
    if (!res.ok) { R.msg(res.message, true); return; }
    pending = null; draftKeys.delete(S.face.key);
    S.saved(res.rev, status); R.conflict();
    R.mark({ rev: res.rev, status });
    R.msg(res.message);
    show(await call('step', S.face.row, 1, filt().status, filt().folder));
  }
  async function boxDrawn(box) {
    setMode('edit');
    const res = await call('add_face', S.face.row, box);
    if (!res || !res.ok) { R.msg(res ? res.message : 'failed', true); R.draw(); return; }
    S.loadAdded(res);
    R.mark({ key: res.key, rev: 0 });
    R.draw(); R.msg(res.message);
  }
  const setMode = (m) => { S.mode = m; R.mode(); };
  const edit = (fn, why) => () => {  // an edit of the shape: redraw, and keep it as a draft
    if (fn() === false) { if (why) R.msg(why, true); return; }
    R.draw(); changed();
  };
  const view = (fn) => () => { fn(); R.toggles(); R.draw(); };

  // ------------------------------------------------------------ the one table of actions
  // Buttons name an entry by data-act; keys are listed here. help: shown in the key list.
  const ACTIONS = {
    next: { keys: ['ArrowRight', 'n'], help: 'next', run: () => go(1) },
    prev: { keys: ['ArrowLeft', 'p'], help: 'previous', run: () => go(-1) },
    accept: { keys: ['a'], help: 'accept', run: () => act('accepted') },
    save: { keys: ['s'], help: 'save correction', run: () => act('corrected') },
    reject: { keys: ['r'], help: 'reject', run: () => act('rejected') },
    skip: { keys: ['k'], help: 'skip', run: () => act('skipped') },
    undo: { keys: ['Ctrl+z'], help: 'undo', run: edit(S.undoEdit) },
    redo: { keys: ['Ctrl+y', 'Ctrl+Shift+z'], help: 'redo', run: edit(S.redoEdit) },
    zoom: { keys: ['0'], help: 'reset zoom', run: () => R.fit() },
    selectAll: { keys: ['Ctrl+a'], help: 'select all', run: () => { S.selectAll(); R.draw(); } },
    clear: { keys: ['Escape'], help: 'clear selection', run: () => { S.clearSel(); setMode('edit'); R.draw(); } },
    rotateLeft: { keys: ['['], help: 'rotate selection', run: edit(() => S.rotate(-2)) },
    rotateRight: { keys: [']'], run: edit(() => S.rotate(2)) },
    shrink: { keys: ['-'], help: 'scale selection', run: edit(() => S.scale(1 / 1.03)) },
    grow: { keys: ['=', '+'], run: edit(() => S.scale(1.03)) },
    nudgeLeft: { keys: ['Shift+ArrowLeft'], help: 'nudge selection', run: edit(() => S.nudge(-1, 0)) },
    nudgeRight: { keys: ['Shift+ArrowRight'], run: edit(() => S.nudge(1, 0)) },
    nudgeUp: { keys: ['Shift+ArrowUp'], run: edit(() => S.nudge(0, -1)) },
    nudgeDown: { keys: ['Shift+ArrowDown'], run: edit(() => S.nudge(0, 1)) },
    occluded: { keys: ['v'], help: 'mark selection occluded / visible', run: edit(S.toggleOccluded, 'select the occluded points first (click, Shift+click or a rectangle)') },
    reset: { keys: ['m'], help: 'reset to the model points', run: edit(S.resetToModel, 'no model points for this face') },
    overlay: { keys: ['o'], help: "show the model's points", run: view(() => { S.overlay = !S.overlay; }) },
    addface: { keys: ['b'], help: 'draw a box for a missed face', run: () => setMode(S.mode === 'box' ? 'edit' : 'box') },
    keepMine: { run: async () => { S.face = { ...S.face, rev: S.theirs.rev }; S.theirs = null; R.conflict(); await act(pending || 'corrected'); } },
    takeTheirs: { run: () => { S.takeTheirs(); pending = null; R.conflict(); R.draw(); R.mark({ rev: S.face.rev }); changed(); R.msg('took the saved version'); } },
  };

  bindInput(element, S, R, ACTIONS, {
    boxDrawn, changed,
    filterChanged: first,
    jump: (text) => open('jump', text, filt().status, filt().folder),
  });
  window.addEventListener('pagehide', () => { if (draftTimer) saveDraft(); });

  // ------------------------------------------------------------ start
  const info = await call('info');
  R.options($('.al-status'), info.statuses);
  R.options($('.al-folder'), info.folders);
  R.groupToggles();
  R.help(ACTIONS);
  R.toggles();
  await show(await call('first', 'todo', ''));
  R.mark({ ready: '1' });
  R.root.focus();
})();
