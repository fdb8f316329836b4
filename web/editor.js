// autolabel point editor. Runs inside gr.HTML's js_on_load with `element` and `server`, after
// editor-state.js (createState), editor-render.js (createRenderer) and editor-input.js (bindInput),
// which autolabel/review/app.py puts before this file.
// It only moves points and sends 68 [x, y] pairs back; all logic lives in Python.
// Server calls: info, first, step, jump, act, add_face (see autolabel/review/session.py).
(async () => {
  const CFG = JSON.parse(element.querySelector('.al-config')?.textContent || '{}');
  const S = createState(CFG), R = createRenderer(element, S, CFG);
  const $ = (s) => element.querySelector(s);
  window.__autolabel = { get face() { return S.face; }, get points() { return S.pts; }, get view() { return S.view; } };

  // ------------------------------------------------------------ talking to the server
  const filt = () => ({ status: $('.al-status').value || 'todo', folder: $('.al-folder').value || '' });
  const call = async (fn, ...args) => { try { return await server[fn](...args); } catch (e) { R.msg(`server error: ${e}`, true); return null; } };

  async function show(p) {
    if (!p) return;
    if (p.error) { R.msg(p.error, true); return; }
    if (p.empty) { S.clear(); R.blank(p.counts, p.message); return; }
    S.load(p);
    await R.showImage(p);
    R.fit(); R.count(); R.faceLine();
    R.mark({ key: p.key, rev: p.rev, status: p.status });
  }
  const first = async () => show(await call('first', filt().status, filt().folder));
  const go = async (dir) => {
    if (!S.face) return first();
    return show(await call('step', S.face.row, dir, filt().status, filt().folder));
  };
  async function act(status) {
    if (!S.face || !S.pts.length) { R.msg('nothing to save here (draw a box with B to add a face)', true); return; }
    if (status === 'accepted' && S.edited()) status = 'corrected';
    const res = await call('act', S.face.key, status, S.pts, S.face.rev);
    if (!res) return;
    if (!res.ok) { R.msg(res.message, true); return; }
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
  const edit = (fn) => () => { fn(); R.draw(); };

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
    selectAll: { keys: ['Ctrl+a'], help: 'select all', run: edit(S.selectAll) },
    clear: { keys: ['Escape'], help: 'clear selection', run: () => { S.clearSel(); setMode('edit'); R.draw(); } },
    rotateLeft: { keys: ['['], help: 'rotate selection', run: edit(() => S.rotate(-2)) },
    rotateRight: { keys: [']'], run: edit(() => S.rotate(2)) },
    shrink: { keys: ['-'], help: 'scale selection', run: edit(() => S.scale(1 / 1.03)) },
    grow: { keys: ['=', '+'], run: edit(() => S.scale(1.03)) },
    nudgeLeft: { keys: ['Shift+ArrowLeft'], help: 'nudge selection', run: edit(() => S.nudge(-1, 0)) },
    nudgeRight: { keys: ['Shift+ArrowRight'], run: edit(() => S.nudge(1, 0)) },
    nudgeUp: { keys: ['Shift+ArrowUp'], run: edit(() => S.nudge(0, -1)) },
    nudgeDown: { keys: ['Shift+ArrowDown'], run: edit(() => S.nudge(0, 1)) },
    addface: { keys: ['b'], help: 'draw a box for a missed face', run: () => setMode(S.mode === 'box' ? 'edit' : 'box') },
  };

  bindInput(element, S, R, ACTIONS, {
    boxDrawn,
    filterChanged: first,
    jump: async (text) => show(await call('jump', text, filt().status, filt().folder)),
  });

  // ------------------------------------------------------------ start
  const info = await call('info');
  R.options($('.al-status'), info.statuses);
  R.options($('.al-folder'), info.folders);
  R.groupToggles();
  R.help(ACTIONS);
  await show(await call('first', 'todo', ''));
  R.mark({ ready: '1' });
  R.root.focus();
})();
