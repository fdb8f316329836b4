// Editor state: the face on screen, its points, occluded flags and box, the selection, the edit
// history and the view. Plain data and the edits on it; no DOM and no server calls (rendering
// and input live apart).
function createState(cfg) {
  const S = {
    face: null,          // payload from the server (see ReviewSession.face)
    pts: [],             // current points [[x, y] x 68]
    occ: new Set(),      // indices of points flagged occluded
    box: null,           // the face box [x0, y0, x1, y1] (editable)
    loaded: '',          // snapshot as loaded or last saved (to tell edits)
    sel: new Set(),      // selected point indices
    undo: [], redo: [],  // snapshots
    view: { s: 1, x: 0, y: 0 },  // screen = view.s * image + (view.x, view.y)
    look: { brightness: 100, contrast: 100 },  // image display only (percent)
    hidden: new Set(),   // hidden groups
    mode: 'edit',        // 'edit' | 'box'
    extra: [],           // faces added on this image
    overlay: false,      // show the model's points beside the edited ones
    theirs: null,        // the version saved elsewhere when a save met a conflict
    shapes: [],          // more reference shapes to draw: [{name, points, color}] (e.g. an audit view)
  };
  const ids = () => S.pts.map((_, i) => i);

  S.groupOf = (i) => { for (const [g, a, b] of cfg.groups) if (i >= a && i <= b) return g; return ''; };
  S.visible = (i) => !S.hidden.has(S.groupOf(i));

  // ------------------------------------------------------------ snapshots: points, flags, box
  S.snapshot = () => JSON.stringify([S.pts, [...S.occ].sort((a, b) => a - b), S.box]);
  S.restore = (snap) => { const [p, o, b] = JSON.parse(snap); S.pts = p; S.occ = new Set(o); S.box = b; };
  S.edited = () => S.snapshot() !== S.loaded;
  S.flags = () => S.pts.map((_, i) => S.occ.has(i));  // 68 booleans, as the server stores them

  // ------------------------------------------------------------ loading
  const take = (points, occluded, box) => {
    S.pts = points ? points.map((q) => q.slice()) : [];
    S.occ = new Set((occluded || []).flatMap((o, i) => (o ? [i] : [])));
    S.box = box ? box.slice() : null;
  };
  S.load = (p) => {
    if (p.audit && !S.auditSeen) { S.overlay = true; S.auditSeen = true; }  // an audit compares two shapes: show both
    S.face = p; S.extra = p.extra_faces || []; S.theirs = null;
    take(p.points, p.occluded, p.box);
    S.loaded = S.snapshot(); S.undo = []; S.redo = []; S.sel.clear();
    if (p.draft) {  // unsaved edits kept from an earlier visit: shown as edits, not as saved
      take(p.draft.points, p.draft.occluded, p.draft.box || p.box);
      S.face = { ...p, rev: p.draft.base_rev };
    }
  };
  S.clear = () => { S.face = null; S.pts = []; S.box = null; S.theirs = null; };
  S.loadAdded = (res) => {  // a face the person drew a box for; its points come from the model
    S.face = { ...S.face, key: res.key, rev: 0, status: 'todo', box: res.box, points: res.points, model_points: res.points,
      occluded: null, draft: null, face_index: -1, audit: false,
      uncertain_points: res.uncertain_points || [], point_uncertainty: res.point_uncertainty || null };
    take(res.points, null, res.box); S.theirs = null;
    S.loaded = ''; S.undo = []; S.redo = []; S.sel.clear();
  };
  S.saved = (rev, status) => { S.face = { ...S.face, rev, status }; S.loaded = S.snapshot(); S.theirs = null; };

  // ------------------------------------------------------------ history
  S.push = () => { S.undo.push(S.snapshot()); if (S.undo.length > 200) S.undo.shift(); S.redo = []; };
  S.dropLast = () => { S.undo.pop(); };
  S.undoEdit = () => { if (!S.undo.length) return false; S.redo.push(S.snapshot()); S.restore(S.undo.pop()); return true; };
  S.redoEdit = () => { if (!S.redo.length) return false; S.undo.push(S.snapshot()); S.restore(S.redo.pop()); return true; };

  // ------------------------------------------------------------ selection
  S.selectAll = () => { S.sel = new Set(ids()); };
  S.clearSel = () => { S.sel.clear(); };
  S.toggleSel = (i) => { S.sel.has(i) ? S.sel.delete(i) : S.sel.add(i); };
  S.grab = (i) => { if (!S.sel.has(i)) S.sel = new Set([i]); };
  S.selectRect = (x0, y0, x1, y1) => {
    [x0, x1] = [Math.min(x0, x1), Math.max(x0, x1)]; [y0, y1] = [Math.min(y0, y1), Math.max(y0, y1)];
    S.pts.forEach((p, i) => { if (S.visible(i) && p[0] >= x0 && p[0] <= x1 && p[1] >= y0 && p[1] <= y1) S.sel.add(i); });
  };

  // ------------------------------------------------------------ edits (selection, or the whole shape)
  S.moveSel = (dx, dy) => { for (const i of S.sel) { S.pts[i][0] += dx; S.pts[i][1] += dy; } };
  S.transform = (fn) => {
    const at = S.sel.size ? [...S.sel] : ids();
    if (!at.length) return;
    const cx = at.reduce((a, i) => a + S.pts[i][0], 0) / at.length, cy = at.reduce((a, i) => a + S.pts[i][1], 0) / at.length;
    S.push();
    for (const i of at) S.pts[i] = fn(S.pts[i][0] - cx, S.pts[i][1] - cy, cx, cy);
  };
  S.rotate = (deg) => { const a = deg * Math.PI / 180, c = Math.cos(a), s = Math.sin(a); S.transform((dx, dy, cx, cy) => [cx + c * dx - s * dy, cy + s * dx + c * dy]); };
  S.scale = (k) => S.transform((dx, dy, cx, cy) => [cx + k * dx, cy + k * dy]);
  S.nudge = (ox, oy) => S.transform((dx, dy, cx, cy) => [cx + dx + ox, cy + dy + oy]);
  S.resetToModel = () => {
    const m = S.face && S.face.model_points;
    if (!m) return false;
    S.push(); S.pts = m.map((q) => q.slice()); S.occ.clear();
    return true;
  };
  S.toggleOccluded = () => {  // the selection: all occluded unless all already are
    if (!S.sel.size) return false;
    S.push();
    const all = [...S.sel].every((i) => S.occ.has(i));
    for (const i of S.sel) all ? S.occ.delete(i) : S.occ.add(i);
    return true;
  };
  S.takeTheirs = () => {
    const t = S.theirs;
    S.push(); take(t.points, t.occluded, t.box || S.box);
    S.saved(t.rev, t.status);
  };
  // corner c of the box: 0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left
  S.moveCorner = (c, x, y) => { const b = S.box; b[c === 0 || c === 3 ? 0 : 2] = x; b[c < 2 ? 1 : 3] = y; };
  S.tidyBox = () => { const [x0, y0, x1, y1] = S.box; S.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)]; };

  // ------------------------------------------------------------ reference shapes drawn beside the edited one
  S.refs = () => [
    ...(S.overlay && S.face && S.face.model_points ? [{ name: 'model', points: S.face.model_points }] : []),
    ...(S.theirs ? [{ name: 'theirs', points: S.theirs.points, color: '#ff8c1a' }] : []),
    ...S.shapes,
  ];

  // ------------------------------------------------------------ view
  S.fitView = (W, H) => {  // the face box (or the whole image) with a margin, filling W x H
    let [x0, y0, x1, y1] = S.box || [0, 0, S.face.width, S.face.height];
    const pad = 0.6 * Math.max(x1 - x0, y1 - y0);
    x0 -= pad; y0 -= pad; x1 += pad; y1 += pad;
    const s = Math.min(W / (x1 - x0), H / (y1 - y0), 8);
    S.view = { s, x: W / 2 - s * (x0 + x1) / 2, y: H / 2 - s * (y0 + y1) / 2 };
  };
  S.zoomAt = (mx, my, k) => {  // zoom by k keeping the screen point (mx, my) still
    const v = S.view, s = Math.min(Math.max(v.s * k, 0.05), 40);
    v.x = mx - (mx - v.x) * s / v.s; v.y = my - (my - v.y) * s / v.s; v.s = s;
  };
  return S;
}
