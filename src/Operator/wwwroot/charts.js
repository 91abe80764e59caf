"use strict";
// A small line chart on a canvas: one series against time, y from 0 to the largest value seen,
// labelled axes. Redrawn when a point arrives (the live feed pushes them); nothing polls.
class LineChart {
  constructor(canvas, { title, color, format }) {
    this.canvas = canvas;
    this.title = title;
    this.color = color;
    this.format = format;
    this.points = [];
  }

  push(t, v) {
    this.points.push([t, v]);
    this.draw();
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const L = 84, R = 10, T = 22, B = 20;
    const pts = this.points;
    const tMax = Math.max(1, ...pts.map(p => p[0]));
    const yMax = Math.max(1e-9, ...pts.map(p => p[1]));
    const X = t => L + (t / tMax) * (w - L - R);
    const Y = v => h - B - (v / yMax) * (h - T - B);
    g.font = "12px 'DejaVu Sans', sans-serif";
    g.fillStyle = "#1d2330";
    g.textBaseline = "alphabetic";
    g.textAlign = "left";
    g.fillText(this.title + (pts.length ? ": " + this.format(pts[pts.length - 1][1]) : ""), L, 14);
    g.strokeStyle = "#d9dee7";
    g.fillStyle = "#667085";
    g.font = "11px 'DejaVu Sans', sans-serif";
    for (let i = 0; i <= 2; i++) {
      const v = (yMax * i) / 2, y = Y(v);
      g.beginPath(); g.moveTo(L, y); g.lineTo(w - R, y); g.stroke();
      g.textAlign = "right"; g.fillText(this.format(v), L - 4, y + 4);
    }
    g.textAlign = "left"; g.fillText("0 s", L, h - 5);
    g.textAlign = "right"; g.fillText(tMax.toFixed(1) + " s", w - R, h - 5);
    if (pts.length === 0) return;
    g.strokeStyle = this.color;
    g.lineWidth = 2;
    g.beginPath();
    pts.forEach(([t, v], i) => (i ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v))));
    g.stroke();
  }
}

function humanBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
  return u === 0 ? n.toFixed(0) + " " + units[u] : n.toFixed(1) + " " + units[u];
}
