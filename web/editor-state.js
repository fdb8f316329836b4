// Editor state: the face on screen, its points, the selection and the edit history.
// Plain data and the edits on it; no DOM and no server calls (rendering and input live apart).
function createState(cfg) {
  const S = {
    face: null,          // payload from the server (see ReviewSession.face)
    pts: [],             // current points [[x, y] x 68]
    loaded: '',          // JSON of the points as loaded (to tell edits)
    sel: new Set(),      // selected point indices
    undo: [], redo: [],  // JSON snapshots of pts
    view: { s: 1, x: 0, y: 0 },  // screen = view.s * image + (view.x, view.y)
    hidden: new Set(),   // hidden groups
    mode: 'edit',        // 'edit' | 'box'
    extra: [],           // faces added on this image
  };
  const ids = () => S.pts.map((_, i) => i);

  S.groupOf = (i) => { for (const [g, a, b] of cfg.groups) if (i >= a && i <= b) return g; return ''; };
  S.visible = (i) => !S.hidden.has(S.groupOf(i));

  // ------------------------------------------------------------ loading
  S.load = (p) => {
    S.face = p; S.extra = p.extra_faces || [];
    S.pts = p.points ? p.points.map((q) => q.slice()) : [];
    S.loaded = JSON.stringify(S.pts); S.undo = []; S.redo = []; S.sel.clear();
  };
  S.clear = () => { S.face = null; S.pts = []; };
  S.loadAdded = (res) => {  // a face the person drew a box for; its points come from the model
    S.face = { ...S.face, key: res.key, rev: 0, status: 'todo', box: res.box, points: res.points, face_index: -1 };
    S.pts = res.points.map((q) => q.slice()); S.loaded = ''; S.undo = []; S.redo = []; S.sel.clear();
  };
  S.edited = () => JSON.stringify(S.pts) !== S.loaded;

  // ------------------------------------------------------------ history
  S.push = () => { S.undo.push(JSON.stringify(S.pts)); if (S.undo.length > 200) S.undo.shift(); S.redo = []; };
  S.dropLast = () => { S.undo.pop(); };
  S.undoEdit = () => { if (!S.undo.length) return false; S.redo.push(JSON.stringify(S.pts)); S.pts = JSON.parse(S.undo.pop()); return true; };
  S.redoEdit = () => { if (!S.redo.length) return false; S.undo.push(JSON.stringify(S.pts)); S.pts = JSON.parse(S.redo.pop()); return true; };

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

  // ------------------------------------------------------------ view
  S.fitView = (W, H) => {  // the face box (or the whole image) with a margin, filling W x H
    let [x0, y0, x1, y1] = S.face.box || [0, 0, S.face.width, S.face.height];
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
