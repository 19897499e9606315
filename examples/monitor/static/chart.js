// A small latency chart on a <canvas>: no library, no CDN.
// drawLatencyChart(canvas, checks): checks are {latency_ms, ok, checked_at}, oldest first.
(function () {
  "use strict";

  function niceMax(value) {
    if (value <= 0) return 10;
    const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * magnitude >= value) return step * magnitude;
    }
    return 10 * magnitude;
  }

  window.drawLatencyChart = function (canvas, checks, maxPoints) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 300;
    const height = canvas.clientHeight || 90;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const styles = getComputedStyle(canvas);
    const line = styles.getPropertyValue("--chart-line").trim() || "#2f6fde";
    const fill = styles.getPropertyValue("--chart-fill").trim() || "rgba(47,111,222,0.15)";
    const bad = styles.getPropertyValue("--chart-bad").trim() || "#d64545";
    const grid = styles.getPropertyValue("--chart-grid").trim() || "#e6e8ee";
    const text = styles.getPropertyValue("--chart-text").trim() || "#7a8090";

    const left = 4, right = width - 44, top = 8, bottom = height - 6;
    const points = checks.slice(-maxPoints);
    const latencies = points.filter((c) => c.latency_ms != null).map((c) => c.latency_ms);
    const yMax = niceMax(Math.max(0, ...latencies) * 1.1);
    const step = (right - left) / Math.max(1, maxPoints - 1);
    const x0 = right - (points.length - 1) * step;
    const y = (ms) => bottom - (ms / yMax) * (bottom - top);

    // grid: zero, half and top lines, labelled on the right
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (const fraction of [0, 0.5, 1]) {
      const value = yMax * fraction;
      ctx.strokeStyle = grid;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(value)) + 0.5);
      ctx.lineTo(right, Math.round(y(value)) + 0.5);
      ctx.stroke();
      ctx.fillStyle = text;
      const label = value >= 1000 ? (value / 1000).toFixed(1) + " s" : Math.round(value) + " ms";
      ctx.fillText(label, right + 6, y(value));
    }
    if (!points.length) {
      ctx.fillStyle = text;
      ctx.fillText("waiting for the first check…", left + 4, (top + bottom) / 2);
      return;
    }

    // failed checks: a red band behind the line
    points.forEach((c, i) => {
      if (!c.ok) {
        ctx.fillStyle = bad;
        ctx.globalAlpha = 0.18;
        ctx.fillRect(x0 + i * step - step / 2, top, Math.max(step, 2), bottom - top);
        ctx.globalAlpha = 1;
      }
    });

    // the latency line and the area under it (gaps where a check had no response)
    const segments = [];
    let current = [];
    points.forEach((c, i) => {
      if (c.latency_ms == null) {
        if (current.length) segments.push(current);
        current = [];
      } else {
        current.push([x0 + i * step, y(c.latency_ms)]);
      }
    });
    if (current.length) segments.push(current);
    for (const seg of segments) {
      ctx.beginPath();
      ctx.moveTo(seg[0][0], bottom);
      seg.forEach(([px, py]) => ctx.lineTo(px, py));
      ctx.lineTo(seg[seg.length - 1][0], bottom);
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
      ctx.beginPath();
      seg.forEach(([px, py], k) => (k ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
      ctx.strokeStyle = line;
      ctx.lineWidth = 1.6;
      ctx.lineJoin = "round";
      ctx.stroke();
    }

    // markers: failed checks in red at their latency (or on the baseline), the last one bigger
    points.forEach((c, i) => {
      const last = i === points.length - 1;
      if (c.ok && !last) return;
      const px = x0 + i * step;
      const py = c.latency_ms == null ? bottom - 2 : y(c.latency_ms);
      ctx.beginPath();
      ctx.arc(px, py, last ? 3 : 2.2, 0, Math.PI * 2);
      ctx.fillStyle = c.ok ? line : bad;
      ctx.fill();
    });
  };
})();
